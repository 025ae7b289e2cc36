# The packages the stand-in offers: only attributes the pinned nixpkgs (release 26.05) really has,
# taken from /work/shared/reference/nixpkgs-facts.md and nixpkgs' source. An attribute missing here
# fails evaluation; add one only after confirming it exists in nixpkgs 26.05.
#
# Per package (all optional):
#   license   licence short name
#   free      false for unfree licences (refused unless config.allowUnfree)
#   cuda      "config": built with CUDA when config.cudaSupport (then depends on the unfree CUDA
#             libraries); "always": always CUDA-linked on Linux (the upstream wheels)
#   provides  Python modules it installs (two packages providing one module collide in
#             python3.withPackages, as buildEnv does)
#   version
{
  # Top-level attributes (pkgs.<name>).
  top = {
    bashInteractive = { };
    coreutils = { };
    cacert = { license = "mpl20"; };
    curl = { };
    wget = { };
    git = { };
    openssh = { };
    nginx = { };
    nodejs = { };
    code-server = { };
    netdata = { license = "gpl3Plus"; };
    glances = { };
    filebrowser = { };
    novnc = { };
    tigervnc = { };
    ungit = { };
    sslh = { };
    tini = { };
    jdk = { };
    jdk17 = { };
    jdk21 = { };
    scala = { };
    R = { };
    rWrapper = { };
    rstudio-server = { license = "agpl3Only"; };
    rstudioServerWrapper = { };
    spark = { version = "4.0.1"; };
    spark_3_5 = { version = "3.5.7"; };
    iana-etc = { };
    tzdata = { };
    procps = { };
    which = { };
    less = { };
    vim = { };
    htop = { };
    gnutar = { };
    gzip = { };
    unzip = { };
    zip = { };
    findutils = { };
    gnugrep = { };
    gnused = { };
    gawk = { };
    openssl = { };
    xfce4-session = { };
    xfwm4 = { };
    xfce4-panel = { };
    xfdesktop = { };
    xfce4-terminal = { };
    thunar = { };
    xfconf = { };
    xfce4-settings = { };
    xfce4-exo = { };
    # The RFC-style formatter; in 26.05 `nixfmt-rfc-style` is only a deprecated alias of it.
    nixfmt = { };
  };

  # python3Packages.<name> (also python313Packages, python3.pkgs).
  python = {
    numpy = { };
    scipy = { };
    pandas = { };
    scikit-learn = { provides = [ "sklearn" ]; };
    scikit-image = { provides = [ "skimage" ]; };
    matplotlib = { };
    seaborn = { };
    statsmodels = { };
    sympy = { };
    networkx = { };
    polars = { };
    pyarrow = { };
    dask = { };
    sqlalchemy = { };
    requests = { };
    pyyaml = { provides = [ "yaml" ]; };
    pillow = { provides = [ "PIL" ]; };
    tqdm = { };
    h5py = { };
    click = { };
    jinja2 = { };
    setuptools = { };
    pip = { };
    ipython = { provides = [ "IPython" ]; };
    ipykernel = { };
    ipywidgets = { };
    jupyterlab = { version = "4.5.0"; };
    notebook = { version = "7.5.0"; };
    jupyter-server = { provides = [ "jupyter_server" ]; };
    jupyter-lsp = { provides = [ "jupyter_lsp" ]; };
    nbconvert = { };
    nbformat = { };
    nbdime = { };
    jupytext = { };
    jupyterlab-git = { provides = [ "jupyterlab_git" ]; };
    python-lsp-server = { provides = [ "pylsp" ]; };
    tensorboard = { };
    supervisor = { };
    websockify = { };
    plotly = { };
    bokeh = { };
    altair = { };
    papermill = { };
    mlflow = { };
    streamlit = { };
    xgboost = { cuda = "config"; };
    lightgbm = { cuda = "config"; };
    catboost = { cuda = "config"; };
    spacy = { };
    nltk = { };
    opencv4 = { provides = [ "cv2" ]; };
    numba = { cuda = "config"; };
    transformers = { };
    datasets = { };
    pyspark = { };
    keras = { };
    onnx = { };
    onnxruntime = { cuda = "config"; };
    gpustat = { };
    # Source builds: CUDA builds (for hours) when config.cudaSupport.
    torch = { cuda = "config"; };
    torchvision = { cuda = "config"; };
    torchaudio = { cuda = "config"; };
    # Upstream wheels, CUDA-linked on Linux; their licence includes unfreeRedistributable.
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
    # python3Packages.tensorflow is tensorflow-bin (the wheel) and takes cudaSupport from config.
    tensorflow-bin = {
      cuda = "config";
      provides = [ "tensorflow" ];
      license = "asl20";
      version = "2.20.0";
    };
    tensorflow = {
      aliasOf = "tensorflow-bin";
    };
    jax = { };
    jaxlib-bin = {
      cuda = "config";
      provides = [ "jaxlib" ];
    };
    jaxlib = {
      aliasOf = "jaxlib-bin";
    };
    jax-cuda12-plugin = {
      cuda = "always";
      provides = [ "jax_cuda12_plugin" ];
    };
    jax-cuda12-pjrt = {
      cuda = "always";
      provides = [ "jax_plugins" ];
    };
    cupy = {
      cuda = "always";
    };
  };

  # rPackages.<name> (CRAN names, dots as underscores).
  r = {
    IRkernel = { };
    ggplot2 = { };
    tidyverse = { };
    dplyr = { };
    data_table = { };
    shiny = { };
    rmarkdown = { };
    devtools = { };
    sparklyr = { };
  };

  # cudaPackages.<name>: NVIDIA's libraries under the CUDA EULA (unfree).
  cuda = {
    cudatoolkit = { };
    cudnn = { };
    cuda_cudart = { };
    libcublas = { };
    nccl = { };
  };
}
