"""The command-line layer every entry point shares: absl flags with ml_collections'
config_flags, in three steps.

1. The base config: the experiment `--config FILE[:ARG]` (its folder importable while it
   loads, so it may import plug-in modules beside it), or, for entries that read a trained
   run, the run's saved config.json (`--workdir`).
2. A new part on the command line (`--config.model.name=`, `--config.data.name=`,
   `--config.loss.terms=`) rebuilds that section for it (jaxseg.configs.rebuild): the
   experiment's settings that the new part also takes are kept.
3. Every other `--config.a.b=VALUE` override is typed and applied by config_flags against
   that config, so an option the chosen part does not take does not exist.

Any mistake (unknown flag or key, wrong type, missing file, an error in the experiment file)
ends in one line `prog: error: ...` on stderr and exit status 2; `--help` prints the entry's
docstring and flags and exits 0.
"""

from __future__ import annotations

import ast
import linecache
import os
import re
import sys
from collections.abc import Callable, Sequence

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from jaxseg import configs
from jaxseg.configs import ConfigError

# Overrides that choose a part: applied first, each rebuilding its section.
SELECTORS = {"model.name": "model", "data.name": "data", "loss.terms": "terms"}
_OVERRIDE = re.compile(r"^--?(no)?config\.([\w.]+)(=(.*))?$", re.S)


def _value_after(argv: Sequence[str], name: str) -> str | None:
    """The value of --name V or --name=V in argv (the last one), else None."""
    value = None
    for i, arg in enumerate(argv):
        if arg in (f"--{name}", f"-{name}") and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(f"--{name}=") or arg.startswith(f"-{name}="):
            value = arg.split("=", 1)[1]
    return value


def config_spec(argv: Sequence[str]) -> str | None:
    """FILE[:ARG] of --config in argv."""
    return _value_after(argv, "config")


def default_workdir(spec: str) -> str:
    """runs/<experiment stem>[_<arg>] for --config path/stem.py[:arg]."""
    path, _, arg = spec.partition(":")
    stem = os.path.splitext(os.path.basename(path))[0]
    return os.path.join("runs", f"{stem}_{arg}" if arg else stem)


def _selectors(argv: Sequence[str]) -> tuple[list[str], dict]:
    """(argv without the part-choosing overrides, {"model"|"data"|"terms": value})."""
    rest, chosen = [], {}
    i = 0
    while i < len(argv):
        m = _OVERRIDE.match(argv[i])
        if m and m.group(2) in SELECTORS and not m.group(1):
            value = m.group(4)
            if value is None:  # --config.model.name VALUE
                if i + 1 >= len(argv):
                    raise ConfigError(f"--config.{m.group(2)} needs a value")
                value, i = argv[i + 1], i + 1
            if m.group(2) == "loss.terms":
                try:
                    value = ast.literal_eval(value)
                except (ValueError, SyntaxError):
                    raise ConfigError(
                        f"--config.loss.terms={value!r} is not ((loss name, weight), ...)"
                    ) from None
            chosen[SELECTORS[m.group(2)]] = value
        else:
            rest.append(argv[i])
        i += 1
    return rest, chosen


# ------------------------------------------------------------------------- experiments


def _experiment_error(error: BaseException, path: str) -> ConfigError:
    """One line for an exception raised while an experiment file ran: file, line and, for a
    key the config does not have, which part does not take it and the closest keys."""
    target = os.path.abspath(path)
    where, frame = path, None
    seen, chain = set(), [error]
    while chain:  # the exception, and those it was raised from or during
        e = chain.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        tb = e.__traceback__
        while tb is not None:
            if os.path.abspath(tb.tb_frame.f_code.co_filename) == target:
                frame, where = tb.tb_frame, f"{path}:{tb.tb_lineno}"
                line = linecache.getline(target, tb.tb_lineno).strip()
            tb = tb.tb_next
        chain += [e.__cause__, e.__context__]
    text = " ".join(str(error).split())
    missing = re.search(r"""Key ["'](\w+)["'] does not exist""", text)
    if missing and frame is not None:
        dotted = re.search(r"\b\w+((?:\.\w+)+)\s*=", line)
        key = dotted.group(1)[1:] if dotted else missing.group(1)
        config = next(
            (v for v in frame.f_locals.values() if isinstance(v, ml_collections.ConfigDict)),
            None,
        )
        if config is not None and "." in key:
            return ConfigError(f"{where}: {configs.unknown_key(key, config)}")
        return ConfigError(f"{where}: unknown config key {key!r}")
    if "Traceback" in str(error):  # config_flags wraps get_config's errors in their trace
        text = str(error).strip().splitlines()[-1]
    return ConfigError(f"{where}: {text}")


def read_experiment(spec: str) -> ml_collections.ConfigDict:
    """The locked config that `get_config(ARG)` of experiment FILE[:ARG] returns, loaded by
    config_flags with the file's folder importable (for plug-in modules beside it)."""
    path = spec.split(":", 1)[0]
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} not found")
    folder = os.path.dirname(os.path.abspath(path))
    fv = flags.FlagValues()
    argv = ["jaxseg", "--config", spec]
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, sys_argv=argv)
    sys.path.insert(0, folder)
    try:
        fv(argv)
        config = fv.config
    except Exception as e:  # the experiment's own code: any error, one line naming the file
        raise _experiment_error(e, path) from None
    finally:
        sys.path.remove(folder)
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{path}: get_config() returned {type(config).__name__}, not ConfigDict")
    try:
        configs.check_types(config)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return config


def load_experiment(spec: str, *overrides: str) -> ml_collections.ConfigDict:
    """The locked config of experiment `spec` (FILE[:ARG]) with `--config.a.b=V` overrides,
    as the command line would build it (for notebooks and tests); raises ConfigError."""
    fv = flags.FlagValues()
    rest = parse(fv, ["--config", spec, *overrides], config_from="file")
    if rest:
        raise ConfigError(f"not overrides: {' '.join(rest)}")
    return fv.config


# ------------------------------------------------------------------------------ parsing


def _base(argv: Sequence[str], config_from: str) -> ml_collections.ConfigDict:
    """Step 1: the experiment's config, or the saved config of --workdir's run (base_config()
    when there is none yet: the entry reports the missing run itself)."""
    if config_from == "file":
        spec = config_spec(argv)
        if spec is None:
            raise ConfigError(
                "--config FILE[:ARG] is required, e.g. --config experiments/unet.py:quick"
            )
        return read_experiment(spec)
    from jaxseg import workdir as run_files  # here: it imports plug-ins the run used

    workdir = _value_after(argv, "workdir")
    if workdir and run_files.has_config(workdir):
        return run_files.read_config(workdir)
    return configs.base_config()


def parse(fv: flags.FlagValues, argv: Sequence[str], *, config_from: str) -> list[str]:
    """Parses argv (without the program name) into fv, defining fv.config (from "file": an
    experiment, or "workdir": a trained run) with the --config.* overrides applied; returns
    the positional arguments. Raises ConfigError with the one-line message."""
    argv = list(argv)
    try:
        base = _base(argv, config_from)
        argv, chosen = _selectors(argv)
        config = configs.rebuild(base, **chosen) if chosen else base
        if config_from == "file":  # the spec was read in step 1
            i = next(i for i, a in enumerate(argv) if a == "--config" or a.startswith("--config="))
            argv = argv[:i] + argv[i + (1 if "=" in argv[i] else 2) :]
        for arg in argv:  # config_flags' own message for these is a KeyError's repr
            m = _OVERRIDE.match(arg)
            if m and m.group(2) not in configs.flat_keys(config):
                raise configs.unknown_key(m.group(2), config)
        config_flags.DEFINE_config_dict(
            "config", config, "", flag_values=fv, lock_config=True, sys_argv=["jaxseg", *argv]
        )
        rest = fv(["jaxseg", *argv])[1:]
        configs.check_types(fv.config)
    except (flags.Error, ConfigError, AttributeError, KeyError, OSError, ValueError) as e:
        raise ConfigError(" ".join(str(e).split())) from None
    return rest


def overrides(fv: flags.FlagValues, argv: Sequence[str], allowed: tuple[str, ...]) -> dict:
    """The --config.* overrides given on the command line, {dotted key: value}, the parts
    chosen included. `allowed` names the sections ("eval") or keys ("eval.mode") that act in
    this entry; any other key raises ConfigError naming it: it would not act, and silence
    would hide that."""
    values = dict(config_flags.get_override_values(fv["config"]))
    _, chosen = _selectors(argv)
    for key, name in SELECTORS.items():
        if name in chosen:
            values[key] = chosen[name]
    refused = [k for k in values if not _allows(allowed, k)]
    if refused:
        section = refused[0].split(".")[0]
        why = (
            f"a trained run's {section} section is fixed"
            if section not in {a.split(".")[0] for a in allowed}
            else "it does not act in this command"
        )
        raise ConfigError(
            f"--config.{refused[0]} cannot change here: {why}; this command takes "
            f"{', '.join(a if '.' in a else a + '.*' for a in allowed)}"
        )
    return values


def _allows(allowed, key: str) -> bool:
    return key in allowed or key.split(".")[0] in allowed or key.rpartition(".")[0] in allowed


def parse_flags(
    fv: flags.FlagValues,
    argv: Sequence[str],
    *,
    prog: str,
    doc: str,
    config_from: str = "file",
    allowed=(),
    positional: bool = False,
) -> list[str]:
    """parse() for an entry's main: `--help` (or -h, --helpfull) prints doc and every flag
    of fv (and the config fields `allowed` for --config.* overrides), then exits 0; a
    mistake prints one line `prog: error: ...` on stderr and exits 2. Returns the positional
    arguments, refused unless the entry takes some (`positional`)."""
    if any(a in ("--help", "-h", "--helpfull", "-help") for a in argv):
        print(help_text(fv, doc, config_from, allowed))
        sys.exit(0)
    try:
        rest = parse(fv, argv, config_from=config_from)
    except ConfigError as e:
        fail(prog, str(e))
    if rest and not positional:
        fail(prog, f"unexpected argument(s) {' '.join(rest)}")
    return rest


def help_text(fv: flags.FlagValues, doc: str, config_from: str, allowed=()) -> str:
    """The entry's docstring, its flags with defaults, and the overridable config fields."""
    lines = [doc.strip(), "", "flags:"]
    if config_from == "file":
        lines.append(
            "  --config: experiment file FILE[:ARG] whose get_config(ARG) returns the config; "
            "override any of its fields with --config.a.b=VALUE"
        )
    for name in sorted(fv):
        flag = fv[name]
        if name != flag.name or name in ("flagfile", "undefok"):
            continue  # aliases and absl's own
        default = "" if flag.default is None else f" (default: {flag.default_as_str})"
        lines.append(f"  --{name}: {flag.help}{default}")
    if allowed:
        lines.append("")
        lines.append(
            "config fields --config.KEY=VALUE may set on the run's saved config (defaults "
            "shown for unet on shapes; the run's own parts have their own model.* and data.*):"
        )
        for key, value in configs.flat_items(configs.base_config()).items():
            if _allows(allowed, key):
                lines.append(f"  --config.{key}  (default: {value!r})")
    return "\n".join(lines)


def fail(prog: str, message: str) -> None:
    """The user's mistake: one line on stderr, exit status 2."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_size(text: str) -> tuple[int, int]:
    """An image size on the command line: '512x384' -> (512, 384), height first; '512' ->
    (512, 512). Anything else raises ValueError naming the text."""
    h, x, w = text.strip().lower().partition("x")
    try:
        size = (int(h), int(w if x else h))
    except ValueError:
        size = (0, 0)
    if min(size) <= 0:
        raise ValueError(f"size {text!r} is not HxW with positive integers, like 512x512")
    return size


def run(main: Callable[[list[str]], object]) -> None:
    """Runs an entry point under absl.app.run (absl logging, init callbacks, its handling of
    errors and exit codes). main takes argv without the program name and parses it into a
    FlagValues of its own (parse_flags), so an entry can also be called in-process."""

    def parser(argv: list[str]) -> list[str]:
        flags.FLAGS.mark_as_parsed()  # no global flags: main parses its own
        flags.FLAGS.verbosity = -1  # absl's warnings, not its INFO lines (app.run's default)
        return list(argv)

    def entry(argv: list[str]) -> None:
        main(argv[1:])  # what main returns (evaluate's report) is for in-process callers

    app.run(entry, flags_parser=parser)
