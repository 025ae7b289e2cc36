"""TensorBoard on a unix socket: `python3 tensorboard_unix.py --host=unix://PATH [tensorboard flags]`.

Run by the workspace's TensorBoard tool (spec/tools/tensorboard.toml) with the image's Python,
which has the `tensorboard` package. TensorBoard's own server class (program.WerkzeugServer)
already binds a werkzeug `unix://` host as an AF_UNIX socket, but its get_url formats the port
with "%d", which fails for a unix socket (the "port" is the path), before it serves anything. This
is tensorboard.main.run_main with a server class that reports a URL without a TCP port, and
without the info file notebooks use to find a TensorBoard's port (tensorboard/program.py
TensorBoard._register_info, tensorboard/manager.py).
"""
import sys

try:
    from absl import app
    from tensorboard import default, main_lib, program
except ImportError as error:  # the tool's python package is missing from this Python
    sys.exit(f"tensorboard_unix: cannot import TensorBoard ({error}); is python3Packages.tensorboard installed?")


class UnixSocketServer(program.WerkzeugServer):
    def get_url(self):
        # Used for the start-up line; there is no TCP port to name.
        return "http://localhost:0%s/" % self._flags.path_prefix.rstrip("/")


class UnlistedTensorBoard(program.TensorBoard):
    def _register_info(self, server):
        # No info file: the notebook integration (tensorboard.notebook.display() without a port,
        # .list()) finds TensorBoards through them by TCP port and would frame B/tools/0/ for
        # this one. It is the menu's B/tools/tensorboard/.
        del server


def main() -> None:
    main_lib.global_init()
    tensorboard = UnlistedTensorBoard(plugins=default.get_plugins(), server_class=UnixSocketServer)
    app.run(tensorboard.main, flags_parser=tensorboard.configure)


if __name__ == "__main__":
    main()
