"""Genotypes: the discrete architecture a search finds, as typed, versioned JSON.

A genotype is a set of cells; each cell lists its kept edges (output node, input node, op name)
and the nodes it concatenates. It is saved as JSON with the space name and provenance (spec hash,
nasreg version, seed) and loaded back with schema checks and registry validation: never ``eval``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import GenotypeError, RegistryError
from .params import show

FORMAT = "nasreg.genotype"
VERSION = 1
#: Larger than any genotype: reading stops there (a wrong path must not read /dev/zero forever).
MAX_BYTES = 16 * 2**20


@dataclass(frozen=True)
class GenotypeEdge:
    node: int
    input: int
    op: str


@dataclass
class CellGenotype:
    edges: list[GenotypeEdge]
    concat: list[int]
    #: How a node combines its inputs, where a space offers a choice (NASNet: "add" or "concat").
    combine: dict[int, str] = field(default_factory=dict)

    def by_node(self) -> dict[int, list[GenotypeEdge]]:
        out: dict[int, list[GenotypeEdge]] = {}
        for e in self.edges:
            out.setdefault(e.node, []).append(e)
        return out


@dataclass
class Genotype:
    space: str
    cells: dict[str, CellGenotype]
    provenance: dict[str, Any] = field(default_factory=dict)
    version: int = VERSION

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self.version,
            "space": self.space,
            "cells": {
                name: {
                    "edges": [{"node": e.node, "input": e.input, "op": e.op} for e in cell.edges],
                    "concat": list(cell.concat),
                    **({"combine": {str(k): v for k, v in cell.combine.items()}} if cell.combine else {}),
                }
                for name, cell in self.cells.items()
            },
            "provenance": self.provenance,
        }

    def save(self, path: str | Path) -> Path:
        """Write the genotype as JSON to ``path`` atomically (a crash leaves the old file). Only a
        genotype nasreg can read back is written: one that :meth:`from_dict` refuses (a cell with
        no edges, ...) is a :class:`GenotypeError` and the file is not touched."""
        from .rundir import RunDir

        from .readback import Damaged, parse

        path = Path(path)
        data = self.to_dict()
        Genotype.from_dict(data, source=str(path))
        text = json.dumps(data, indent=2) + "\n"
        try:  # what load() reads back: bounded nesting, finite numbers, integers within 64 bits
            parse(text)
        except Damaged as exc:
            raise GenotypeError(f"{path}: {exc} (not written: nasreg could not read it back)") from None
        return RunDir(path.parent).write_text(path.name, text)

    @classmethod
    def from_dict(cls, data: Any, source: str = "genotype") -> "Genotype":
        def bad(msg: str) -> GenotypeError:
            return GenotypeError(f"{source}: {msg}")

        if not isinstance(data, dict):
            raise bad("expected a JSON object")
        if data.get("format") != FORMAT:
            raise bad(f"not a nasreg genotype (format is {show(data.get('format'))}, expected {FORMAT!r})")
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise bad(f"version: expected a positive integer, got {show(version)}")
        if version > VERSION:
            raise bad(f"version {show(version)} is newer than this nasreg understands ({VERSION}); upgrade nasreg")
        space = data.get("space")
        if not isinstance(space, str) or not space:
            raise bad(f"space: expected a search space name, got {show(space)}")
        cells_raw = data.get("cells")
        if not isinstance(cells_raw, dict) or not cells_raw:
            raise bad("cells: expected a non-empty object of cell types")
        cells: dict[str, CellGenotype] = {}
        for name, cell in cells_raw.items():
            where = f"cells.{name}"
            if not isinstance(cell, dict):
                raise bad(f"{where}: expected an object")
            unknown = [k for k in cell if k not in ("edges", "concat", "combine")]
            if unknown:
                raise bad(f"{where}: unknown key {show(unknown[0])}")
            edges_raw = cell.get("edges")
            if not isinstance(edges_raw, list) or not edges_raw:
                raise bad(f"{where}.edges: expected a non-empty list")
            edges = []
            for i, e in enumerate(edges_raw):
                if (not isinstance(e, dict) or set(e) != {"node", "input", "op"}
                        or not _is_int(e["node"]) or not _is_int(e["input"]) or not isinstance(e["op"], str)):
                    raise bad(f"{where}.edges[{i}]: expected {{\"node\": int, \"input\": int, \"op\": str}}, "
                              f"got {show(e)}")
                if not 0 <= e["input"] < e["node"]:
                    raise bad(f"{where}.edges[{i}]: input {e['input']} must be >= 0 and before node {e['node']}")
                edges.append(GenotypeEdge(e["node"], e["input"], e["op"]))
            concat = cell.get("concat")
            if not isinstance(concat, list) or not concat or not all(_is_int(c) for c in concat):
                raise bad(f"{where}.concat: expected a non-empty list of node numbers, got {show(concat)}")
            combine_raw = cell.get("combine", {})
            if not isinstance(combine_raw, dict) or not all(isinstance(v, str) for v in combine_raw.values()):
                raise bad(f"{where}.combine: expected an object of node -> method")
            # Keys as to_dict writes them: decimal digits ("2"), not whatever int() accepts ("1_0", " 2").
            if not all(isinstance(k, str) and k.isascii() and k.isdigit() and len(k) < 10 for k in combine_raw):
                raise bad(f"{where}.combine: keys must be node numbers")
            combine = {int(k): v for k, v in combine_raw.items()}
            cells[name] = CellGenotype(edges=edges, concat=list(concat), combine=combine)
        provenance = data.get("provenance", {})
        if not isinstance(provenance, dict):
            raise bad("provenance: expected an object")
        return cls(space=space, cells=cells, provenance=provenance, version=version)

    @classmethod
    def load(cls, path: str | Path, registries: Any = None) -> "Genotype":
        """The genotype in the JSON file ``path``, read by the bounded parser (size, nesting,
        numbers: :mod:`nasreg._core.readback`) and schema-checked (:meth:`from_dict`); with
        ``registries``, also validated against them. Any problem is one :class:`GenotypeError`
        line naming the file (and the key)."""
        from .readback import Damaged, parse
        from .rundir import read_capped

        path = Path(path)
        raw = read_capped(path, MAX_BYTES, GenotypeError, "genotype", directory="cannot read: is a directory")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise GenotypeError(f"{path}: cannot read: {exc}") from None
        try:
            data = parse(text)
        except Damaged as exc:
            raise GenotypeError(f"{path}: {exc}") from None
        genotype = cls.from_dict(data, source=str(path))
        if registries is not None:
            genotype.validate(registries, source=str(path))
        return genotype

    def validate(self, registries: Any, source: str = "genotype") -> None:
        """Check that every op and the space are registered."""
        try:
            registries.search_spaces.get(self.space)
        except RegistryError as exc:
            raise GenotypeError(f"{source}: space: {exc}") from None
        for name, cell in self.cells.items():
            for i, e in enumerate(cell.edges):
                try:
                    registries.operations.get(e.op)
                except RegistryError as exc:
                    raise GenotypeError(f"{source}: cells.{name}.edges[{i}]: {exc}") from None

    def describe(self) -> str:
        lines = []
        for name, cell in self.cells.items():
            parts = [f"n{e.node}<-{e.input}:{e.op}" for e in cell.edges]
            lines.append(f"{name}: " + "  ".join(parts) + f"  concat={cell.concat}")
        return "\n".join(lines)


def _is_int(v: Any) -> bool:
    """A node number: an int (not a bool) within 64 bits, as every JSON file nasreg reads back."""
    return isinstance(v, int) and not isinstance(v, bool) and -2**63 <= v < 2**63


def genotype_from_edges(edges: dict[str, list[GenotypeEdge]], run: Any, *, selector: str, stages: int,
                        **provenance: Any) -> Genotype:
    """The :class:`Genotype` of a search: the kept ``edges`` of every cell type, with provenance.

    What a selector's ``derive`` returns once it has picked the edges (itself, or with the
    space's rule ``run.space.derive(result, run.zero_ops())``)::

        kept = run.space.derive(result, run.zero_ops())
        return nasreg.genotype_from_edges(kept, run, selector="my-selector", stages=result.stage + 1)

    The genotype's space is ``[search_space] name`` (``run.spec.search_space.name``); each cell
    concatenates ``run.space.concat(cell_type)``. The provenance holds, in this order,
    ``spec_hash`` (``run.spec.digest()``), ``nasreg_version``, ``seed`` (``run.seed``),
    ``selector``, ``stages`` (how many search stages the run had), ``data`` (the searched
    dataset and its keys, as ``[data]`` gave them), then the ``provenance``
    keywords as given (JSON values: a selector's own settings, say).
    """
    from .. import __version__
    from .evalspec import search_data

    cells = {ct: CellGenotype(edges=list(kept), concat=list(run.space.concat(ct))) for ct, kept in edges.items()}
    return Genotype(space=run.spec.search_space.name, cells=cells, provenance={
        "spec_hash": run.spec.digest(),
        "nasreg_version": __version__,
        "seed": run.seed,
        "selector": selector,
        "stages": stages,
        # what `nasreg train GENOTYPE` trains on without --spec (a stand-in spec has none)
        **({"data": search_data(run.spec)} if hasattr(run.spec, "raw") else {}),
        **provenance,
    })
