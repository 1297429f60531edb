"""The ``autoinit-sym`` command line: demo, init, visualize, table, derive.

Every failure caused by bad usage or bad input ends with exit status 2 (usage) or 1
(input) and one line on stderr; ``--debug`` shows the traceback instead. Ctrl-C prints one
line and exits with status 130. Warnings are printed one line each. Keras is imported only
by the subcommands that touch a model (demo, init, visualize), and TensorFlow only where it is
Keras's backend (``KERAS_BACKEND``).

Every file is written to a temporary file in its target's folder and moved onto the target
with ``os.replace`` once all of a command's outputs are complete, so a failure (a full disk,
``ulimit -f``, Ctrl-C) leaves every target as it was. Output paths that are the same file as
each other or as an input are refused before any work.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import json
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import traceback
import warnings
import zipfile
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

PROG = "autoinit-sym"
DERIVE_POINTS = ((0.0, 1.0), (1.0, 0.25), (-2.0, 4.0), (3.0, 0.01))
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5", ".json")
DERIVE_VALUE_OPTIONS = ("--name", "--param")
"""``derive``'s options that take a value (the value may start with '-')."""
INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT), as shells report it."""
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
SAFETY = ("What is safe to give it: model files (.keras, .h5, .json) are loaded under Keras safe "
          "mode, which refuses Python code in Lambda layers, unless --unsafe is given; activation "
          "expressions are parsed with a whitelist, never run as Python; formula tables are data. "
          "--custom-objects runs the module it names: give it only code you trust.")


class InputError(Exception):
    """Bad input named in one line (exit status 1)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# ---- arguments --------------------------------------------------------------------------

def _positive(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


def _sample_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be >= 2, got {value}")
    return value


def _input_shape(text: str) -> tuple[str | None, tuple[int, ...]]:
    """``NAME=D1,D2,...`` (or ``D1,D2,...``) as (NAME or None, shape of positive integers)."""
    name, sep, dims = text.rpartition("=")
    if sep and not name:
        raise argparse.ArgumentTypeError(f"expected NAME=D1,D2,... or D1,D2,..., got {text!r}")
    shape = []
    for dim in dims.split(","):
        if not re.fullmatch(r"\s*[0-9]+\s*", dim) or int(dim) <= 0:
            raise argparse.ArgumentTypeError(f"expected [NAME=]D1,D2,... of positive integers (the input's shape "
                                             f"without the batch axis), got {text!r}")
        shape.append(int(dim))
    return (name if sep else None), tuple(shape)


def _input_shapes(entries: list[tuple[str | None, tuple[int, ...]]]) -> Any:
    """The ``--input-shape`` values as AutoInit's ``input_shapes``: a dict by input name, one
    shape (given once, without a name), or None."""
    if not entries:
        return None
    if any(name is None for name, _ in entries):
        if len(entries) > 1:
            raise InputError("--input-shape D1,D2,... without a name is for a single-input model and is given "
                             "once; name each input instead: --input-shape NAME=D1,D2,...")
        return entries[0][1]
    names = [name for name, _ in entries]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise InputError(f"--input-shape gives input(s) {twice} more than once")
    return dict(entries)


def _param(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, _number(value)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``autoinit-sym`` console script."""
    parser = _Parser(prog=PROG, description="Analytic, symbolic AutoInit for Keras 3 models.",
                     epilog=SAFETY)
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    demo = sub.add_parser("demo", help="AutoInit against Keras defaults on a deep MLP (the main job)")
    demo.add_argument("-o", "--plot", default="autoinit_demo.png", help="PNG path (default: %(default)s)")
    demo.add_argument("--samples", type=_sample_count, default=1000, help="Gaussian inputs (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0,
                      help="seed of the weight draw and the samples (default 0: every run is the same)")
    demo.set_defaults(run=_cmd_demo)

    def model_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", help="a .keras file, a legacy .h5 file or a JSON model config")
        p.add_argument("--unsafe", action="store_true",
                       help="load a trusted model file whose Lambda layers hold Python code (Keras "
                            "safe_mode=False): loading runs that code")
        p.add_argument("--custom-objects", metavar="MODULE",
                       help="module name or .py file defining the model's custom layers/functions "
                            "(its `custom_objects` dict, else every class/function it defines) and "
                            "optionally `custom_distribution_estimators`")
        p.add_argument("--input-mean", type=_number, default=0.0, help="mean of the input data (default: 0)")
        p.add_argument("--input-var", type=_positive, default=1.0, help="variance of the input data (default: 1)")
        p.add_argument("--signal-variance", type=_positive, default=1.0,
                       help="variance every weighted layer's output should have (default: 1)")
        p.add_argument("--seed", type=int, default=0,
                       help="seed of the weight draw (and of --plot's samples); default 0, so every run draws the "
                            "same weights, unlike the Python API, whose default draws fresh ones")

    init = sub.add_parser("init", help="initialize a saved model with AutoInit and save it as .keras",
                          epilog=SAFETY)
    model_options(init)
    init.add_argument("-o", "--output", required=True, help="where to write the initialized model (.keras)")
    init.add_argument("--distribution", default="truncated_normal",
                      help="weight distribution: truncated_normal, untruncated_normal, uniform, orthogonal")
    init.add_argument("--report", help="write the per-layer estimates (and how each was obtained) as JSON")
    init.add_argument("--plot", help="also write the signal-propagation PNG")
    init.add_argument("--samples", type=_sample_count, default=100, help="Gaussian inputs for --plot")
    init.add_argument("--input-shape", type=_input_shape, action="append", default=[], metavar="[NAME=]D1,D2,...",
                      help="a model input's shape without the batch axis (repeatable), by input name, or "
                           "unnamed for a single-input model; unknown sizes are otherwise taken as 16, with a warning")
    chosen = init.add_mutually_exclusive_group()
    chosen.add_argument("--layers", metavar="NAME,NAME,...",
                        help="initialize only these layers; every other weighted layer keeps its weights "
                             "(default: all but the layers with trainable=False)")
    chosen.add_argument("--all", action="store_true", help="initialize every layer, frozen ones included")
    init.add_argument("--data", metavar="FILE", help="sample inputs (.npy for one input, .npz by input name) "
                      "that set the input statistics and the calibration batch; read without pickle")
    init.add_argument("--calibrate", action="store_true",
                      help="rescale each weighted layer so its pre-activation variance on this draw is the target")
    init.set_defaults(run=_cmd_init)

    vis = sub.add_parser("visualize", help="plot signal propagation, Keras defaults against AutoInit",
                         epilog=SAFETY)
    model_options(vis)
    vis.add_argument("--plot", required=True, help="PNG path")
    vis.add_argument("--samples", type=_sample_count, default=100, help="Gaussian inputs (default: %(default)s)")
    vis.add_argument("--log-variance", choices=("auto", "on", "off"), default="auto",
                     help="log scale on the variance panel (default: %(default)s)")
    vis.set_defaults(run=_cmd_visualize)

    table = sub.add_parser("table", help="export the activation-moment formula table")
    table.add_argument("--format", required=True, help="markdown, latex, json or csv")
    table.add_argument("--names", help="comma-separated activation names (default: all)")
    table.add_argument("-o", "--output", help="file to write (default: stdout)")
    table.set_defaults(run=_cmd_table)

    derive = sub.add_parser("derive", help="derive E[f(X)], E[f(X)^2] for X ~ N(mu, var)",
                            epilog="An expression starting with '-' may be given as is (derive -x) or "
                                   "after -- (derive -- -x).")
    derive.add_argument("expr", help="an expression in x (e.g. 'x*tanh(x)'; parsed with a whitelist, "
                                     "never run as Python) or a Keras activation name")
    derive.add_argument("--name", help="a name to show for the function")
    derive.add_argument("--param", type=_param, action="append", default=[], metavar="NAME=VALUE",
                        help="a parameter value (repeatable), e.g. --param alpha=0.5")
    derive.set_defaults(run=_cmd_derive)
    for command in sub.choices.values():  # --debug also after the subcommand
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show tracebacks on errors")
    return parser


# ---- entry point ------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(_dash_expression_last(list(sys.argv[1:] if argv is None else argv)))
    try:
        with _one_line_warnings(), _file_size_limit_as_error():
            args.run(args)
    except BrokenPipeError:  # output piped into a reader that stopped early (e.g. `head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except KeyboardInterrupt:
        if args.debug:
            traceback.print_exc()
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as err:  # every failure becomes one line, unless --debug
        if args.debug:
            traceback.print_exc()
        else:
            print(f"{PROG} {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    return 0


def _dash_expression_last(argv: list[str]) -> list[str]:
    """``argv`` with a ``derive`` expression that starts with '-' (``derive -x``, which argparse
    would read as an unknown option) moved behind ``--``; unchanged when ``--`` is given."""
    position = next((i for i, token in enumerate(argv) if not token.startswith("-")), None)
    if position is None or argv[position] != "derive" or "--" in argv:
        return argv
    kept, moved, value_next = [], [], False
    for token in argv[position + 1:]:
        if not value_next and token.startswith("-") and not token.startswith("--") and token != "-h":
            moved.append(token)
        else:
            kept.append(token)
        value_next = not value_next and token in DERIVE_VALUE_OPTIONS
    return argv[:position + 1] + kept + (["--", *moved] if moved else [])


def one_line(text: str, limit: int = 600) -> str:
    """``text`` as one line (:func:`plain`) of at most ``limit`` characters. A longer one first has
    its quoted passages of 80 characters or more abbreviated, so that a long echoed expression
    does not push the reason out; what is still too long is cut at the end."""
    text = plain(text)
    if len(text) > limit:
        text = QUOTED.sub(lambda q: q.group() if len(q.group()) < 80 else f"{q.group()[:40]}...{q.group()[-20:]}",
                          text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def plain(text: str) -> str:
    """``text`` without ANSI escape codes, its whitespace collapsed to single spaces."""
    return " ".join(ANSI_ESCAPE.sub("", text).split())


def _one_line(err: BaseException) -> str:
    text = one_line(str(err)) or type(err).__name__
    return text if isinstance(err, (InputError, ValueError)) else f"{type(err).__name__}: {text}"


class _WarningLine(logging.Handler):
    """Prints each record of the ``autoinit_sym`` logger as one line on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"{PROG}: warning: {one_line(record.getMessage())}", file=sys.stderr)


def _show_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None,
                  line: str | None = None) -> None:
    print(f"{PROG}: warning: {one_line(f'{category.__name__}: {message}')}", file=sys.stderr)


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """While a command runs, every ``autoinit_sym`` log warning (e.g. a probe's, which quotes
    Keras's multi-line, colored error text) and every Python warning is one line on stderr."""
    logger, handler = logging.getLogger("autoinit_sym"), _WarningLine(logging.WARNING)
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            yield
    finally:
        logger.removeHandler(handler)


@contextlib.contextmanager
def _file_size_limit_as_error() -> Iterator[None]:
    """A write past ``ulimit -f`` raises OSError (EFBIG), which is reported and cleaned up,
    instead of killing the process with SIGXFSZ (POSIX, main thread only)."""
    if not hasattr(signal, "SIGXFSZ") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGXFSZ, previous)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """File descriptor 2 pointed at /dev/null for the duration: TensorFlow's C++ start-up log
    lines ignore TF_CPP_MIN_LOG_LEVEL and write there directly. Python exceptions still propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def import_keras_quietly() -> None:
    """Import Keras, and run its backend's first op, with stderr silenced (:func:`quiet_stderr`).
    The backend is Keras's own choice (``KERAS_BACKEND``, else ``keras.json``, else TensorFlow);
    TensorFlow is imported only when it is that backend."""
    if "keras" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with quiet_stderr():
        import keras
        keras.ops.add(keras.ops.zeros(()), 1.0)  # the first op logs device set-up


# ---- model files ------------------------------------------------------------------------

def load_custom_objects(spec: str | None) -> tuple[dict[str, Any], dict[type, type]]:
    """``(custom_objects, custom_distribution_estimators)`` from a module name or .py path."""
    if not spec:
        return {}, {}
    if spec.endswith(".py") or os.sep in spec:
        path = Path(spec)
        if not path.is_file():
            raise InputError(f"custom-objects file {spec!r} not found")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[path.stem] = module
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(spec)
        except ModuleNotFoundError as err:
            raise InputError(f"custom-objects module {spec!r} not found ({err})") from None
    objects = getattr(module, "custom_objects", None)
    if objects is None:
        objects = {name: obj for name, obj in vars(module).items()
                   if not name.startswith("_") and callable(obj)
                   and getattr(obj, "__module__", None) == module.__name__}
    estimators = getattr(module, "custom_distribution_estimators", None) or {}
    if not isinstance(objects, dict) or not isinstance(estimators, dict):
        raise InputError(f"custom_objects and custom_distribution_estimators in {spec!r} must be dicts")
    return dict(objects), dict(estimators)


def load_model(path: str, custom_objects: dict[str, Any] | None = None, unsafe: bool = False) -> Any:
    """A Keras model from a .keras file, a legacy .h5 file or a JSON config file, loaded under
    Keras safe mode (no Python code of Lambda layers) unless ``unsafe``."""
    file = Path(path)
    if not file.exists():
        raise InputError(f"model file {path!r} not found")
    if not file.is_file():
        raise InputError(f"model path {path!r} is not a file")
    suffix = file.suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise InputError(f"model file {path!r} has unknown type {suffix or '(none)'!r}; "
                         f"expected one of {', '.join(MODEL_SUFFIXES)}")
    if suffix == ".keras" and not zipfile.is_zipfile(file):
        raise InputError(f"{path!r} is not a valid .keras file (not a zip archive)")
    import_keras_quietly()
    import keras
    from keras.src.saving.serialization_lib import SafeModeScope

    from .walk import legacy

    try:
        if suffix == ".json":
            config = _model_config(file, path)
            if legacy.is_keras2_config(config):  # built with tf_keras; initialize_model takes tf_keras models
                with SafeModeScope(not unsafe):
                    return legacy.from_config(config, custom_objects)
            model = keras.saving.deserialize_keras_object(config, custom_objects=custom_objects, safe_mode=not unsafe)
        else:
            with _lowercase_suffix(file) as readable:
                model = keras.saving.load_model(readable, custom_objects=custom_objects, compile=False,
                                                safe_mode=not unsafe)
    except InputError:
        raise
    except Exception as err:
        raise InputError(_load_failure(path, err)) from err
    if not isinstance(model, keras.Model):
        raise InputError(f"{path!r} holds the config of a {type(model).__name__}, not of a model")
    return model


@contextlib.contextmanager
def _lowercase_suffix(file: Path) -> Iterator[Path]:
    """``file``, or a link to it whose suffix is in lower case (Keras tells formats apart by
    the exact suffix ".keras" or ".h5")."""
    if file.suffix == file.suffix.lower():
        yield file
        return
    with tempfile.TemporaryDirectory(prefix="autoinit-sym-") as folder:
        link = Path(folder) / f"model{file.suffix.lower()}"
        link.symlink_to(file.resolve())
        yield link


def _model_config(file: Path, path: str) -> dict[str, Any]:
    """The parsed JSON of ``file``, checked to be an object with a 'class_name'."""
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"could not load a model from {path!r}: not valid JSON ({err})") from None
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    if not isinstance(config, dict) or "class_name" not in config:
        holds = kinds.get(type(config), "a number") + (" without 'class_name'" if isinstance(config, dict) else "")
        raise InputError(f"{path!r} holds JSON {holds}, not a Keras model config "
                         "(as written by model.to_json())")
    return config


def _load_failure(path: str, err: Exception) -> str:
    text = plain(str(err))
    missing = re.search(r"Could not locate (\w+) '([^']+)'|Unknown (\w+): '([^']+)'", text)
    if missing:
        kind, name = (missing.group(1), missing.group(2)) if missing.group(1) else missing.group(3, 4)
        return (f"model {path!r} needs custom {kind} {name!r}, which was not given; "
                f"pass --custom-objects MODULE")
    if "safe_mode" in text:
        return (f"model {path!r} holds Python code (a Lambda layer's function), which loading would "
                "run; it is refused in safe mode: pass --unsafe only if you trust this file")
    return f"could not load a model from {path!r}: {one_line(text, 200)}"


# ---- output files -------------------------------------------------------------------------

def output_targets(outputs: dict[str, str | None], inputs: dict[str, str | None]) -> dict[str, Path]:
    """The given output paths by option, checked before any work: each names a file (not a
    folder) in an existing folder, and none is the same file as another output or an input
    (resolved paths, hard links, names compared case-insensitively where the folder's
    filesystem is)."""
    targets = {option: Path(path) for option, path in outputs.items() if path}
    for option, target in targets.items():
        if target.is_dir():
            raise InputError(f"{option} {str(target)!r} is a folder, not a file")
        if not target.absolute().parent.is_dir():
            raise InputError(f"{option} {str(target)!r}: folder {str(target.absolute().parent)!r} does not exist")
    named = [*targets.items(), *((option, Path(path)) for option, path in inputs.items() if path)]
    for index, (option, target) in enumerate(named[:len(targets)]):
        for other, path in named[index + 1:]:
            if _same_file(target, path):
                role = "input" if other in inputs else "output"
                raise InputError(f"{option} {str(target)!r} is the same file as the {role} {other} "
                                 f"{str(path)!r}; give different paths")
    return targets


def _same_file(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    if a == b:
        return True
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return (a.name.casefold() == b.name.casefold() and os.path.samefile(a.parent, b.parent)
            and case_insensitive(a.parent))


def case_insensitive(folder: Path) -> bool:
    """Whether names in ``folder`` are case-insensitive (probed with a temporary file)."""
    with tempfile.NamedTemporaryFile(prefix=".autoinit-sym-case-", dir=folder) as probe:
        return (folder / Path(probe.name).name.upper()).exists()


@contextlib.contextmanager
def staged(targets: dict[str, Path]) -> Iterator[dict[str, Path]]:
    """Temporary files, one per target in the target's folder with its suffix in lower case
    (Keras and Matplotlib choose the format by it), to be written inside the ``with`` block.
    When the block completes, each gets the target's permissions (an existing target's, else
    0o666 less the umask) and all are moved onto their targets with ``os.replace``; when it
    fails (Ctrl-C included), all are removed and no target is touched."""
    temporaries: dict[str, Path] = {}
    try:
        for option, target in targets.items():
            handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix.lower(),
                                            dir=target.absolute().parent)
            os.close(handle)
            temporaries[option] = Path(name)
        yield temporaries
        umask = os.umask(0)
        os.umask(umask)
        for option, temporary in temporaries.items():
            target = targets[option]
            os.chmod(temporary, target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~umask)
        for option, temporary in temporaries.items():
            os.replace(temporary, targets[option])
    finally:
        for temporary in temporaries.values():
            temporary.unlink(missing_ok=True)


def _read_data(path: str | None) -> Any:
    """``--data``: a .npy array or a .npz of arrays by input name, read without pickle."""
    if path is None:
        return None
    suffix = Path(path).suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise InputError(f"--data {path!r} must be a .npy or .npz file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InputError(f"--data {path!r} cannot be read as {suffix}: {err}") from None
    if suffix == ".npz":
        with loaded:
            return {name: loaded[name] for name in loaded.files}
    return loaded


def _input_files(args: argparse.Namespace) -> dict[str, str | None]:
    """The files a model command reads: the model and a --custom-objects file."""
    spec = args.custom_objects
    return {"model": args.model,
            "--custom-objects": spec if spec and (spec.endswith(".py") or os.sep in spec) else None}


def _autoinit(args: argparse.Namespace, estimators: dict[type, type],
              distribution: str = "truncated_normal", input_shapes: Any = None) -> Any:
    from .autoinit import AutoInit

    return AutoInit(weight_init_config={"distribution": distribution, "seed": args.seed},
                    input_data_mean=args.input_mean, input_data_var=args.input_var,
                    signal_variance=args.signal_variance,
                    custom_distribution_estimators=estimators, input_shapes=input_shapes)


def _visualize(model: Any, args: argparse.Namespace, objects: dict[str, Any],
               estimators: dict[type, type], plot: Path, log_variance: bool | None = None) -> Any:
    from .visualizer import AutoInitVisualizer

    return AutoInitVisualizer(estimators).visualize(
        model, custom_objects=objects, plot_path=str(plot), num_samples=args.samples,
        signal_variance=args.signal_variance, input_data_mean=args.input_mean,
        input_data_var=args.input_var, seed=args.seed, log_variance=log_variance)


def estimate_record(key: str, estimate: Any) -> dict[str, Any]:
    """One layer call's estimate as a JSON-ready dict: its key, mean, var (lists for several
    outputs), method, and whatever else the estimate holds (inputs, redrawn weights)."""
    record: dict[str, Any] = {"key": key, "layer": key}
    if hasattr(estimate, "summary"):
        record.update(estimate.summary())
    elif is_dataclass(estimate):
        record.update(asdict(estimate))
    mean, var = tuple(estimate)[:2]
    record.update(mean=_floats(mean), var=_floats(var),
                  method=str(getattr(estimate, "method", record.get("method", ""))))
    return {k: v for k, v in record.items() if _json_ready(v)}


def _floats(value: Any) -> float | list[float]:
    return [float(v) for v in value] if isinstance(value, (tuple, list)) else float(value)


def _json_ready(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


# ---- subcommands ------------------------------------------------------------------------

def _cmd_demo(args: argparse.Namespace) -> None:
    targets = output_targets({"--plot": args.plot}, {})
    import_keras_quietly()
    from .demo import run_demo

    with staged(targets) as temporary, contextlib.redirect_stdout(io.StringIO()) as text:
        run_demo(plot_path=str(temporary["--plot"]), samples=args.samples, seed=args.seed)
    # The demo names the file it wrote, which was the temporary one.
    print(text.getvalue().replace(str(temporary["--plot"]), args.plot), end="")


def _cmd_init(args: argparse.Namespace) -> None:
    from .walk.settings import DISTRIBUTIONS

    if args.distribution not in DISTRIBUTIONS:
        raise InputError(f"unknown distribution {args.distribution!r}; valid choices: {', '.join(DISTRIBUTIONS)}")
    if Path(args.output).suffix.lower() != ".keras":
        raise InputError(f"output {args.output!r} must end in .keras")
    input_shapes = _input_shapes(args.input_shape)
    targets = output_targets({"--output": args.output, "--report": args.report, "--plot": args.plot},
                             _input_files(args))
    import_keras_quietly()
    objects, estimators = load_custom_objects(args.custom_objects)
    model = load_model(args.model, objects, args.unsafe)
    layers = "all" if args.all else None if args.layers is None else [n for n in args.layers.split(",") if n]
    initialized, estimates = _autoinit(args, estimators, args.distribution, input_shapes).initialize_model(
        model, return_estimates=True, custom_objects=objects, layers=layers, data=_read_data(args.data),
        calibrate=args.calibrate)
    series = None
    with staged(targets) as temporary:
        with quiet_stderr():  # on another backend, Keras's save imports TensorFlow where installed
            initialized.save(str(temporary["--output"]))
        if args.report:
            report = {"model": initialized.name, "source": args.model,
                      "settings": {"input_data_mean": args.input_mean, "input_data_var": args.input_var,
                                   "signal_variance": args.signal_variance,
                                   "distribution": args.distribution, "seed": args.seed,
                                   "input_shapes": input_shapes, "layers": layers, "data": args.data,
                                   "calibrate": args.calibrate},
                      "initialization": estimates.report.summary(),
                      "layers": [estimate_record(n, e) for n, e in estimates.items()]}
            temporary["--report"].write_text(json.dumps(report, indent=2) + "\n")
        if args.plot:
            series = _visualize(model, args, objects, estimators, temporary["--plot"])
    counts: dict[str, int] = {}
    for estimate in estimates.values():
        method = str(getattr(estimate, "method", "?"))
        counts[method] = counts.get(method, 0) + 1
    summary = ", ".join(f"{n} {m}" for m, n in sorted(counts.items()))
    print(f"initialized {initialized.name!r}: {len(estimates)} layer calls ({summary}); "
          f"{estimates.report.text()}; wrote {args.output}")
    if series is not None:
        print(series.table())
    for written in (args.report, args.plot):
        if written:
            print(f"wrote {written}")


def _cmd_visualize(args: argparse.Namespace) -> None:
    targets = output_targets({"--plot": args.plot}, _input_files(args))
    import_keras_quietly()
    objects, estimators = load_custom_objects(args.custom_objects)
    model = load_model(args.model, objects, args.unsafe)
    log_variance = {"auto": None, "on": True, "off": False}[args.log_variance]
    with staged(targets) as temporary:
        series = _visualize(model, args, objects, estimators, temporary["--plot"], log_variance)
    print(series.table())
    print(f"wrote {args.plot}")


def _cmd_table(args: argparse.Namespace) -> None:
    from .moment_engine.tables import export_table

    targets = output_targets({"--output": args.output}, {})
    text = export_table(format=args.format, names=args.names or None)  # it splits "a,b" itself
    if args.output:
        with staged(targets) as temporary:
            temporary["--output"].write_text(text if text.endswith("\n") else text + "\n")
        print(f"wrote {args.output}")
    else:
        print(text)


def _cmd_derive(args: argparse.Namespace) -> None:
    from .moment_engine.activation_moments import moments

    m = moments(args.expr, **dict(args.param))
    label = args.name or (m.name if m.name.isidentifier() else "f")
    print(f"{label}(x) = {m.expr}")
    print(f"method: {m.method}")
    if m.mean_expr is not None:
        print(f"E[{label}(X)]   = {m.mean_expr}")
        print(f"E[{label}(X)^2] = {m.second_moment_expr}")
        symbols = sorted(str(s) for s in (m.mean_expr.free_symbols | m.second_moment_expr.free_symbols))
        print(f"  (X ~ N(mu, sigma**2); in terms of {', '.join(symbols)})")
    elif m.notes:
        print(f"closed form skipped ({'; '.join(m.notes)}): E[{label}(X)] and E[{label}(X)^2] are computed "
              "by quadrature")
    else:
        print(f"no closed form found: E[{label}(X)] and E[{label}(X)^2] are computed by quadrature")
    mu = np.array([p[0] for p in DERIVE_POINTS])
    var = np.array([p[1] for p in DERIVE_POINTS])
    mean, variance = m.mean(mu, var), m.variance(mu, var)
    print(f"{'mu':>8} {'var':>8} {'mean':>16} {'variance':>16}")
    for row in zip(mu, var, mean, variance):
        print("{:>8g} {:>8g} {:>16.10g} {:>16.10g}".format(*row))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
