"""The command line: ``tinygrad-explain COMMAND ...`` (also ``python -m tinygrad_explain COMMAND ...``).

    tinygrad-explain figures --out figures      every figure of the lecture + index.html (the main job)
    tinygrad-explain serve                      the explorer: a local web page
    tinygrad-explain saliency --image cat.png   one explanation (every method of te.explain.methods)
    tinygrad-explain convert torchvision alexnet.pth alexnet.h5     published weights -> a model file
    tinygrad-explain bench cpu                  benchmarks (explainers, visualisations, cpu)
    tinygrad-explain sanity                     the sanity checks of Adebayo et al. 2018
    tinygrad-explain eval                       the model's accuracy on Fashion-MNIST scenes
    tinygrad-explain walkthrough                backprop to the input, layer by layer (teaching)

``tinygrad-explain COMMAND --help`` describes each.  A usage error (an unknown
command or option, a bad value) prints one line and exits with status 2.

Where things are: the method subcommands are derived from the method registry
(``te.explain.methods``; :mod:`.explain` here), the other commands are the
``main`` of the module that does the work (:data:`TOOLS`).  A new command is one
line in :data:`TOOLS`.
"""
from __future__ import annotations

import argparse
import contextlib
import runpy
import sys
from collections.abc import Callable

PROG = "tinygrad-explain"


def _version() -> str:
    from ... import __version__
    return __version__


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: ``PROG: error: MESSAGE (see PROG --help)``, exit status 2."""

    def error(self, message):
        _one_line_error(self, message)


def _one_line_error(parser, message):
    sys.stderr.write(f"{parser.prog}: error: {message} (see {parser.prog} --help)\n")
    sys.exit(2)


@contextlib.contextmanager
def _one_line_errors(prog: str):
    """Run another module's ``main`` with this command line's conventions: its parser's usage
    errors are one line, and its default program name is ``prog`` (argparse reads sys.argv[0])."""
    saved_error, saved_argv0 = argparse.ArgumentParser.error, sys.argv[:1]
    argparse.ArgumentParser.error = _one_line_error
    sys.argv[:1] = [prog]
    try:
        yield
    finally:
        argparse.ArgumentParser.error = saved_error
        sys.argv[:1] = saved_argv0


def _status(rc) -> int:
    """A ``main``'s result as an exit status (some return a summary dict: success)."""
    return rc if isinstance(rc, int) else 0


# --------------------------------------------------------------------------
# the commands that are another module's main
# --------------------------------------------------------------------------
def _figures(argv):
    from ..figures import main
    return main(argv, prog=f"{PROG} figures")


def _serve(argv):
    from ..explorer import main
    return main(argv)


def _sanity(argv):
    from .sanity import main
    return main(argv)


def _dataset(argv):
    from ...explain.dataset import main
    return main(argv)


def _eval(argv):
    from .evaluate import main
    return main(argv)


def _walkthrough(argv):
    from ..walkthrough import main
    return main(argv)


def _alexnet_converter(kind, what):
    """``convert KIND INPUT OUTPUT`` for the AlexNet readers of tinygrad_explain.modelfiles.convert."""
    def run(argv):
        from ...modelfiles.convert import cli
        return cli(kind, f"\n{what}.", argv)
    return run


def _onnx_converter(argv):
    from ...modelfiles.onnx_import import cli
    return cli(argv, prog=f"{PROG} convert onnx")


#: kind: (one line for --help, main(argv))
CONVERTERS: dict[str, tuple[str, Callable]] = {
    "torchvision": (w := "torchvision's AlexNet checkpoint (.pth, read without torch or unpickling) -> a model "
                    "file", _alexnet_converter("torchvision", w)),
    "caffe": (w := "Caffe's bvlc_alexnet.caffemodel (read without protobuf) -> a model file",
              _alexnet_converter("caffe", w)),
    "onnx": ("an ONNX image classifier, e.g. a ResNet from torch.onnx.export (read with the onnx package, as "
             "data) -> a model file", _onnx_converter),
}


def _convert(argv):
    return _choose(f"{PROG} convert", "kind", {k: v[0] for k, v in CONVERTERS.items()}, argv,
                   lambda kind, rest: CONVERTERS[kind][1](rest))


BENCHMARKS = {   # name: (what it measures, the script of a source checkout that does it)
    "explainers": ("every map method scored on the shipped scenes (docs/explainers.md)", "bench_explainers.py"),
    "visualisations": ("class models and inversions judged by an independent network", "bench_visualizations.py"),
    "cpu": ("the kernels and a whole network on the CPU, against PyTorch", "bench_cpu.py"),
}


def _bench(argv):
    return _choose(f"{PROG} bench", "benchmark", {k: v[0] for k, v in BENCHMARKS.items()}, argv, _run_benchmark)


def _run_benchmark(name, argv):
    """The benchmarks are scripts of a source checkout (they write into its docs/ and compare with
    its reference implementations); run from an installed wheel, say where they are."""
    from ...modelfiles.shipped import PACKAGE_DIR
    script = PACKAGE_DIR.parent / "scripts" / BENCHMARKS[name][1]
    if not script.is_file():
        sys.stderr.write(f"{PROG} bench {name}: error: the benchmarks run from a source checkout "
                         f"(scripts/{script.name}); this is an installed package without one\n")
        return 2
    saved = sys.argv[:]
    sys.argv[:] = [f"{PROG} bench {name}", *argv]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv[:] = saved
    return 0


def _choose(prog, what, table, argv, run):
    """A command with a second word: ``prog KIND ARGS...`` -> ``run(KIND, ARGS)``."""
    p = Parser(prog=prog, description=f"choose a {what}:",
               epilog="\n".join(f"  {k:<15} {v}" for k, v in table.items()),
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(what, choices=list(table), help=f"one of {', '.join(table)}; then its own --help")
    if not argv:
        p.error(f"say which {what}: {', '.join(table)}")
    if argv[0] in ("-h", "--help"):
        p.parse_args(["--help"])
    if argv[0] not in table:
        p.error(f"unknown {what} {argv[0]!r}; choose from {', '.join(table)}")
    with _one_line_errors(f"{prog} {argv[0]}"):
        return run(argv[0], argv[1:])


#: the commands that are not one explanation: name -> (one line for --help, main(argv))
TOOLS: dict[str, tuple[str, Callable]] = {
    "figures": ("every figure of the lecture as PNGs plus index.html (the main job)", _figures),
    "serve": ("the explorer: a local web page for every method", _serve),
    "convert": ("published AlexNet weights (torchvision, caffe) or an ONNX network -> a model file", _convert),
    "bench": ("benchmarks: explainers, visualisations, cpu (from a source checkout)", _bench),
    "sanity": ("the sanity checks of Adebayo et al. 2018 on the shipped scenes", _sanity),
    "eval": ("a model file's accuracy on Fashion-MNIST scenes", _eval),
    "walkthrough": ("backprop to the input on a tiny network, layer by layer (teaching)", _walkthrough),
    "dataset": ("explain a whole data set: maps and scores to a resumable HDF5 file, on Dask workers", _dataset),
}


def build_parser() -> Parser:
    from .explain import add_method, methods
    ap = Parser(prog=PROG, description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    for name, (text, _) in TOOLS.items():
        sub.add_parser(name, help=text, add_help=False)     # listed here; parsed by their own main
    for entry in methods().values():
        add_method(sub, entry)
    return ap


def main(argv=None) -> int:
    """Run one command; returns the exit status (0 done, 2 a usage or input error)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] and argv[0] in TOOLS:
        with _one_line_errors(f"{PROG} {argv[0]}"):
            return _status(TOOLS[argv[0]][1](argv[1:]))
    from .explain import check, run
    ap = build_parser()
    args = ap.parse_args(argv)
    check(args, args.error)                     # the subcommand's parser: its one-line error
    import tinygrad_explain as te
    from tinygrad_explain import explain as X
    from tinygrad_explain.core.device import DeviceUnavailable, set_num_threads
    set_num_threads(args.threads)
    try:
        print(run(args))
    except (X.ExplainError, X.OptimizationError, te.ModelFileError, OSError, ValueError, KeyError,
            DeviceUnavailable) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 2
    return 0
