"""mlws generator: load and validate spec/, resolve flavors, render Nix modules and manifests."""
