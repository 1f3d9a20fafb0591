"""A custom import-linter contract: these modules may import only what is on an allow-list.

import-linter's own contract types forbid imports; a numba kernel module must
do the opposite: import *only* numpy, numba, math and the other kernels, so
that it stays a pure function over arrays (no logging, I/O, settings or
sockets). ``make lint`` runs it (``PYTHONPATH=tests lint-imports``) with the
contracts in ``pyproject.toml`` (``type = "plstream_allowlist"``).
"""

from __future__ import annotations

from grimp import ImportGraph
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


class AllowlistContract(Contract):
    """Every module in ``source_modules`` (and below) imports only ``allowed_modules`` (and below)."""

    type_name = "plstream_allowlist"

    source_modules = fields.ListField(subfield=fields.StringField())
    allowed_modules = fields.ListField(subfield=fields.StringField())

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        allowed = tuple(self.allowed_modules)  # type: ignore[arg-type]
        violations = []
        for source in self.source_modules:  # type: ignore[attr-defined]
            for module in sorted({source} | graph.find_descendants(source)):
                for imported in sorted(graph.find_modules_directly_imported_by(module)):
                    if not any(imported == name or imported.startswith(name + ".") for name in allowed):
                        violations.append((module, imported))
        return ContractCheck(kept=not violations, metadata={"violations": violations})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for module, imported in check.metadata["violations"]:
            output.print_error(f"{module} imports {imported}, which is not on the allow-list.")
            output.new_line()
