# Strict stand-in for github:NixOS/nixpkgs (release 26.05), for evaluating mlws' flake offline:
#   nix eval --override-input nixpkgs path:/abs/tests/stand-ins/nixpkgs ...
# It needs a copy of the project's package base, spec/known-attributes.toml, next to this file (a
# flake's source is copied to the store alone, so it cannot read ../../../spec):
#   cp spec/known-attributes.toml tests/stand-ins/nixpkgs/   (tests/test_flake.py does this in a
#   temporary copy of the stand-ins).
# It offers `lib` and `legacyPackages.<system>` like the real flake, and `import nixpkgs { ... }`
# works on it (default.nix). It has only the attributes of the base and the arguments the real
# nixpkgs has, and behaves as nixpkgs does with what the base records (pkgs.nix): removed
# attributes throw nixpkgs' message; broken (also under the config in force), unfree (without
# allowUnfree or an allowUnfreePredicate admitting the licence), unsupported-platform and insecure
# packages are refused with check-meta's messages (fake.nix); python3.withPackages takes the
# whole runtime closure and fails on two packages installing one module, as buildEnv does; every
# package records whether it is a CUDA build. Every builder call is recorded in
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
