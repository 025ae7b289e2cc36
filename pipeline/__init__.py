"""The release pipeline behind `mlws image ...`: read the docker-archive tarballs that
`dockerTools.buildLayeredImage` writes, and turn them (or `nix path-info` closures) into CycloneDX
SBOMs, image diffs, release manifests, a CI build matrix and registry pushes by digest.

The GitHub workflows under .github/workflows/ call these commands, so what CI does is tested here.
"""
