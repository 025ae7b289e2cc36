// mlws-workspace: a prebuilt JupyterLab / Notebook 7 extension written by hand, without npm.
//
// Why by hand: an extension built with npm and webpack needs, to build in the image with Nix, a
// fixed-output hash of its npm dependencies that nobody can compute or check on the machines
// where mlws is developed. This one needs nothing: it is a module-federation container in the
// shape JupyterLab's bootstrap loads (`window._JUPYTERLAB[name]` with `init(shareScope)` and
// `get(module)` returning a factory of the module; see jupyterlab/staging bootstrap.js and
// index.out.js: `createModule` and `getPlugins`), and it imports no shared package: it uses
// only the application object its plugin is activated with.
//
// What it adds:
// - a "Share…" item in the file browser's context menu. It opens the workspace home page's share
//   form (B/tooling/home#share) for the item that was right-clicked, in a new tab; the form
//   creates the link (runtime/shares.py).
// - the command `mlws:unavailable-tool`, which is never enabled: the Open Tool menu lists an
//   unavailable tool with it, so the entry is greyed out with its reason as the label's tail (and
//   as the caption, which the command palette shows). The menu itself stays declarative: settings overrides written by
//   runtime/steps/75_tool_menu.py, whose available entries run the built-in `help:open`, so they
//   work even where this file is not loaded.
(function () {
  "use strict";

  function baseUrl() {
    const data = document.getElementById("jupyter-config-data");
    const config = data ? JSON.parse(data.textContent || "{}") : {};
    const base = config.baseUrl || "/";
    return base.endsWith("/") ? base : base + "/";
  }

  // The file browser whose listing holds `node`: JupyterLab has it in the left area, Notebook 7
  // in the main area (its tree page); both are widgets with `node`, `model.path` and
  // `selectedItems()`.
  function browserOf(app, node) {
    for (const area of ["left", "main", "right"]) {
      let widgets;
      try {
        widgets = app.shell.widgets(area);
      } catch (error) {
        continue;
      }
      for (const widget of widgets) {
        const candidates = [widget];
        if (widget.content) candidates.push(widget.content);
        for (const candidate of candidates) {
          if (candidate && candidate.node && candidate.node.contains(node) && candidate.model
              && typeof candidate.selectedItems === "function") {
            return candidate;
          }
        }
      }
    }
    return null;
  }

  function selectedPath(app) {
    const item = app.contextMenuHitTest(node => node.classList && node.classList.contains("jp-DirListing-item"));
    if (!item) return null;
    const browser = browserOf(app, item);
    if (browser) {
      for (const model of browser.selectedItems()) {
        return model.path;  // the right-clicked item is selected by the listing itself
      }
    }
    const name = item.querySelector(".jp-DirListing-itemText");
    const folder = browser && browser.model ? browser.model.path : "";
    return name ? (folder ? folder + "/" : "") + name.textContent.trim() : null;
  }

  const plugin = {
    id: "mlws-workspace:share-context-menu",
    description: "Share the selected file or folder with a workspace share link",
    autoStart: true,
    requires: [],
    activate(app) {
      const command = "mlws:share-selected";
      app.commands.addCommand(command, {
        label: "Share…",
        caption: "Make a share link for this file or folder (opens the workspace home page)",
        execute: () => {
          const path = selectedPath(app);
          const target = baseUrl() + "tooling/home" + (path ? "?share=" + encodeURIComponent(path) : "") + "#share";
          window.open(target, "_blank", "noopener");
        },
      });
      app.contextMenu.addItem({ command, selector: ".jp-DirListing-item", rank: 60 });
    },
  };

  const unavailableTool = {
    id: "mlws-workspace:unavailable-tool",
    description: "A never-enabled command for the Open Tool menu's unavailable tools",
    autoStart: true,
    requires: [],
    activate(app) {
      // args: {text, reason}, written by runtime/steps/75_tool_menu.py.
      app.commands.addCommand("mlws:unavailable-tool", {
        label: args => args.text || "unavailable tool",
        caption: args => args.reason ? "Unavailable: " + args.reason : "Unavailable in this workspace",
        isEnabled: () => false,
        execute: () => undefined,
      });
    },
  };

  window._JUPYTERLAB = window._JUPYTERLAB || {};
  window._JUPYTERLAB["mlws-workspace"] = {
    init: () => Promise.resolve(),
    get: module => module === "./extension"
      ? Promise.resolve(() => ({ __esModule: true, default: [plugin, unavailableTool] }))
      : Promise.reject(new Error("mlws-workspace has no module " + module)),
  };
})();
