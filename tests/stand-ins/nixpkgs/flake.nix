# Strict stand-in for github:NixOS/nixpkgs (release 26.05), for evaluating mlws' flake offline:
#   nix eval --override-input nixpkgs path:/abs/tests/stand-ins/nixpkgs ...
# It needs a copy of the project's spec/known-attributes.toml next to this file (the package names
# it offers; a flake's source is copied to the store alone, so it cannot read ../../../spec):
#   cp spec/known-attributes.toml tests/stand-ins/nixpkgs/   (tests/test_flake.py does this in a
#   temporary copy of the stand-ins).
# It offers `lib` and `legacyPackages.<system>` like the real flake, and `import nixpkgs { ... }`
# works on it (default.nix). It has only attributes and arguments the real nixpkgs has, throws on
# unfree packages without config.allowUnfree, and records every builder call in
# `passthru.standInCall = { fn; args; }` so tests can read what was asked for. Nothing it returns
# can be built.
{
  description = "Strict evaluation-only stand-in for nixpkgs 26.05 (mlws tests)";

  outputs =
    { self }:
    let
      lib = import ./lib.nix;
    in
    {
      inherit lib;
      legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (system: import ./default.nix { inherit system; });
    };
}
