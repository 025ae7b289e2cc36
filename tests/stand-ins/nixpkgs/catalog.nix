# What the stand-in knows about packages beyond their names.
#
# The NAMES come from known-attributes.toml (a copy of the project's spec/known-attributes.toml,
# placed next to this file by the tests): the stand-in offers exactly those attributes, plus the
# builders and helpers listed under `infrastructure` in pkgs.nix. This file only adds metadata the
# tests depend on, taken from nixpkgs' source and /work/shared/reference/nixpkgs-facts.md; every key
# here must also be a known attribute (tests/test_flake.py checks that).
#
# Per package (all optional):
#   license   licence short name (default "mit")
#   free      false for unfree licences: refused unless config.allowUnfree
#   cuda      "config": built with CUDA when config.cudaSupport (it then depends on the unfree
#             CUDA libraries); "always": always CUDA-linked (the upstream Linux wheels, CuPy)
#   provides  Python modules it installs (default: its name with - as _); two packages that
#             install one module collide in python3.withPackages, as in buildEnv
#   deps      names (same set) it depends on at run time
#   version
{
  # Top-level attributes (dotted paths as in known-attributes.toml).
  top = {
    cacert.license = "mpl20";
    netdata.license = "gpl3Plus";
    rstudio-server.license = "agpl3Only";
    spark.version = "4.0.1";
    spark_3_5.version = "3.5.7";
  };

  # python3Packages.<name>.
  python = {
    jupyterlab.version = "4.5.0";
    notebook.version = "7.5.0";
    scikit-learn.provides = [ "sklearn" ];
    scikit-image.provides = [ "skimage" ];
    pyyaml.provides = [ "yaml" ];
    pillow.provides = [ "PIL" ];
    ipython.provides = [ "IPython" ];
    opencv4.provides = [ "cv2" ];
    opencv-python.provides = [ "cv2" ];
    opencv-python-headless.provides = [ "cv2" ];
    xgboost.cuda = "config";
    lightgbm.cuda = "config";
    catboost.cuda = "config";
    numba.cuda = "config";
    onnxruntime.cuda = "config";
    # Source builds: CUDA builds (for hours) when config.cudaSupport.
    torch.cuda = "config";
    torchvision = {
      cuda = "config";
      deps = [ "torch" ];
    };
    torchaudio = {
      cuda = "config";
      deps = [ "torch" ];
    };
    # Upstream wheels, CUDA-linked on Linux; torch-bin's licence includes unfreeRedistributable.
    torch-bin = {
      cuda = "always";
      free = false;
      license = "bsd3 issl unfreeRedistributable";
      provides = [ "torch" ];
      version = "2.9.1";
    };
    torchvision-bin = {
      cuda = "always";
      provides = [ "torchvision" ];
      license = "bsd3";
      deps = [ "torch-bin" ];
    };
    torchaudio-bin = {
      cuda = "always";
      provides = [ "torchaudio" ];
      license = "bsd2";
      deps = [ "torch-bin" ];
    };
    # python3Packages.tensorflow is tensorflow-bin (the wheel); it takes cudaSupport from config.
    tensorflow-bin = {
      cuda = "config";
      provides = [ "tensorflow" ];
      license = "asl20";
      version = "2.20.0";
    };
    jaxlib-bin = {
      cuda = "config";
      provides = [ "jaxlib" ];
    };
    jax-cuda12-plugin = {
      cuda = "always";
      provides = [ "jax_cuda12_plugin" ];
    };
    jax-cuda12-pjrt = {
      cuda = "always";
      provides = [ "jax_plugins" ];
    };
    cupy.cuda = "always";
    pycuda.cuda = "always";
  };

  # cudaPackages.<name>: NVIDIA's libraries under the CUDA EULA (unfree).
  cuda = [
    "cudatoolkit"
    "cudnn"
    "cuda_cudart"
    "libcublas"
    "nccl"
  ];
}
