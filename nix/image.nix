# nix/image.nix: the OCI image of one flavor, built with pkgs.dockerTools.buildLayeredImage.
#
# The image runs as the unprivileged user `workspace` (UID/GID 1000, home /home/workspace), starts
# `mlws start` (the runtime reads the flavor's manifest from $MLWS_MANIFEST) and serves every tool
# behind port 8080. Its creation time is fixed, so two builds of one commit give the same image.
#
# Arguments (an attribute set):
#   pkgs            the flavor's nixpkgs package set (dockerTools, bashInteractive, coreutils come
#                   from it).
#   flavor          one flavor file's contents (flavors/<flavor>.nix): imageName, description,
#                   env, manifest, nixpkgsConfig are read.
#   systemPackages  list of derivations: the flavor's system packages and its tools' packages
#                   (nix/lib.nix `systemPackages`).
#   pythonEnv       the flavor's Python environment (nix/python.nix).
#   packageEnv      environment the system packages need (nix/lib.nix `env`: JUPYTER_PATH for the
#                   R kernel), set before the flavor's env.
#   mlwsApp         the `mlws` application (nix/app.nix); `${mlwsApp}/bin/mlws start` is the
#                   entrypoint.
#   version         image tag and org.opencontainers.image.version (the project version).
#   revision        org.opencontainers.image.revision: the git commit, or "dirty" for a tree with
#                   uncommitted changes.
#   created         image creation time, a fixed RFC 3339 string (never "now").
#   source          org.opencontainers.image.source: the project's repository URL.
#   licenses        org.opencontainers.image.licenses: an SPDX expression.
#
# Returns the image derivation (a docker-archive tarball: `docker load < result`).
{
  pkgs,
  flavor,
  systemPackages,
  pythonEnv,
  packageEnv,
  mlwsApp,
  version,
  revision,
  created,
  source,
  licenses,
}:
let
  uid = 1000;
  gid = 1000;
  user = "workspace";
  home = "/home/${user}";
  workspace = "/workspace";
  port = 8080;

  cudaSupport = flavor.nixpkgsConfig.cudaSupport or false;

  # nixpkgs' CUDA programs look for the host driver's libcuda.so.1 in /run/opengl-driver/lib
  # (their RUNPATH); the NVIDIA container toolkit injects the driver libraries into the
  # distribution folders below instead, and Nix's glibc ignores the host's ld.so.cache. The
  # loader path therefore lists all of them; in an image without a GPU the folders do not exist.
  driverLibraryPath = builtins.concatStringsSep ":" [
    "/run/opengl-driver/lib"
    "/usr/lib64"
    "/usr/lib/${pkgs.stdenv.hostPlatform.parsed.cpu.name}-linux-gnu"
  ];

  gpuEnv =
    if cudaSupport then
      {
        NVIDIA_VISIBLE_DEVICES = "all";
        NVIDIA_DRIVER_CAPABILITIES = "compute,utility";
        LD_LIBRARY_PATH = driverLibraryPath;
      }
    else
      { };

  # Later sets win: the flavor may override the GPU defaults and the packages' environment,
  # nothing may override what the runtime depends on (manifest, user, port).
  environment =
    {
      LANG = "C.UTF-8";
    }
    // gpuEnv
    // packageEnv
    // flavor.env
    // {
      MLWS_MANIFEST = "${flavor.manifest}";
      HOME = home;
      USER = user;
      PATH = "${home}/.local/bin:/bin:/usr/bin";
      SSL_CERT_FILE = "/etc/ssl/certs/ca-bundle.crt";
      WORKSPACE_PORT = toString port;
    };

  nss = pkgs.dockerTools.fakeNss.override {
    extraPasswdLines = [ "${user}:x:${toString uid}:${toString gid}:ML workspace user:${home}:/bin/sh" ];
    extraGroupLines = [ "${user}:x:${toString gid}:" ];
  };
in
pkgs.dockerTools.buildLayeredImage {
  name = flavor.imageName;
  tag = version;
  inherit created;

  contents = systemPackages ++ [
    pythonEnv
    mlwsApp
    pkgs.dockerTools.binSh
    pkgs.dockerTools.usrBinEnv
    pkgs.dockerTools.caCertificates
    nss
  ];

  # extraCommands runs unprivileged inside the customisation layer's root: relative paths.
  # tmp and var/tmp are world-writable with the sticky bit, as on any Linux system; run belongs to
  # the user, who starts every service (pid files, sockets, or linking a GPU host's injected
  # driver libraries into /run/opengl-driver/lib).
  extraCommands = ''
    mkdir -p tmp var/tmp run .${workspace} .${home}
    chmod 1777 tmp var/tmp
  '';

  # fakeRootCommands runs under fakeroot after extraCommands, in the same folder; the ownership it
  # sets is recorded in the layer.
  fakeRootCommands = ''
    chown -R ${toString uid}:${toString gid} .${workspace} .${home} ./run
  '';

  config = {
    User = "${toString uid}:${toString gid}";
    WorkingDir = workspace;
    Entrypoint = [
      "${mlwsApp}/bin/mlws"
      "start"
    ];
    Env = map (name: "${name}=${environment.${name}}") (builtins.attrNames environment);
    ExposedPorts = {
      "${toString port}/tcp" = { };
    };
    Volumes = {
      ${workspace} = { };
    };
    Labels = {
      "org.opencontainers.image.title" = flavor.imageName;
      "org.opencontainers.image.description" = flavor.description;
      "org.opencontainers.image.version" = version;
      "org.opencontainers.image.revision" = revision;
      "org.opencontainers.image.source" = source;
      "org.opencontainers.image.licenses" = licenses;
    };
  };
}
