# `import nixpkgs { system; config; }`: the stand-in's package set, entered the way the real
# nixpkgs is (its default.nix takes the same argument names; `system` is the short form of
# `localSystem = { system; }`). Unknown arguments and unknown config options fail loudly.
args:
let
  fake = import ./fake.nix {
    system = "none";
    config = { };
  };
  checked = fake.checkArgs "import nixpkgs" [
    "system"
    "localSystem"
    "crossSystem"
    "config"
    "overlays"
    "crossOverlays"
  ] [ ] args;
  system =
    checked.system or checked.localSystem.system
      or (throw "stand-in nixpkgs: import nixpkgs needs `system` (pure evaluation has no builtins.currentSystem)");
  config = fake.checkArgs "import nixpkgs { config }" [
    "allowUnfree"
    "allowUnfreePredicate"
    "allowBroken"
    "permittedInsecurePackages"
    "allowAliases"
    "cudaSupport"
    "cudaCapabilities"
    "cudaForwardCompat"
    "rocmSupport"
  ] [ ] (checked.config or { });
  knownSystems = [
    "x86_64-linux"
    "aarch64-linux"
  ];
in
if (checked.overlays or [ ]) != [ ] || (checked.crossOverlays or [ ]) != [ ] then
  throw "stand-in nixpkgs: overlays are not implemented by the stand-in"
else if checked ? crossSystem then
  throw "stand-in nixpkgs: crossSystem is not implemented by the stand-in"
else if !(builtins.elem system knownSystems) then
  throw "stand-in nixpkgs: system ${system} is not one the stand-in offers (${builtins.toJSON knownSystems})"
else
  # Forced here: a misspelt option fails at import, not only when a package reads it.
  builtins.seq config (import ./pkgs.nix { inherit system config; })
