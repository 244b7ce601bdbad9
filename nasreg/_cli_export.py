"""``nasreg export``: the evaluation network with its trained weights to ONNX or TorchScript.

A thin layer over :func:`nasreg.export_network`: it prints which weights were used and the
check's line (``exported FILE (onnx, N params): max |diff| vs PyTorch 3.1e-07 on a batch of 8:
ok``). A check above the tolerance is an error line and exit status 1 (the file is kept as
``NAME.mismatch.SUFFIX``); every other user error is one line and exit status 2.
:func:`add_export_command` registers the command on the ``nasreg`` group (called by
:mod:`nasreg.cli`).
"""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["add_export_command"]


def add_export_command(group: click.Group) -> None:
    """Add ``export`` to ``group`` (the ``nasreg`` group of :mod:`nasreg.cli`, fully defined by then)."""
    from .cli import _plugin_option, _set_option, console, handle_errors

    @group.command("export")
    @click.argument("genotype_path", metavar="GENOTYPE.json", type=click.Path(path_type=Path, readable=False))
    @click.option("--format", "fmt", required=True, type=click.Choice(["onnx", "torchscript"]),
                  help="onnx (checked with onnxruntime) or torchscript (torch.jit.trace).")
    @click.option("--weights", "weights", type=click.Path(path_type=Path, readable=False), default=None,
                  metavar="WEIGHTS",
                  help="A training's weights.pt, its run directory (or a search's, with eval/), or a training "
                       "checkpoint.pt (default: the weights.pt beside GENOTYPE.json, in its folder or its eval/).")
    @click.option("--out", "out", type=click.Path(path_type=Path), default=None, metavar="FILE",
                  help="The file to write (default: model.onnx or model.torchscript.pt beside the weights).")
    @click.option("--force", is_flag=True, help="Replace an existing --out file.")
    @click.option("--untrained", is_flag=True, help="Export the freshly initialized network (no weights).")
    @click.option("--spec", "spec_path", type=click.Path(path_type=Path, readable=False), default=None,
                  metavar="SPEC", help="The spec the weights were trained with (default: the spec.toml beside the weights).")
    @_set_option
    @_plugin_option
    @handle_errors
    def export(genotype_path: Path, fmt: str, weights: Path | None, out: Path | None, force: bool, untrained: bool,
               spec_path: Path | None, overrides: tuple[str, ...], extra_plugins: tuple[str, ...]) -> None:
        """Export the evaluation network of a genotype with its trained weights, and check it.

        The exported model (eval mode: logits only, a dynamic batch axis) is run on a random batch
        of 8 images beside PyTorch (onnxruntime for ONNX); above a max |diff| of 1e-4 the file is
        kept as NAME.mismatch.SUFFIX and the command exits 1."""
        from .api import export_network

        result = export_network(genotype_path, format=fmt, weights=weights, out=out, force=force,
                                untrained=untrained, spec=spec_path, overrides=overrides, plugins=extra_plugins)
        console.print(result.weights_line(str(genotype_path)), highlight=False, markup=False, soft_wrap=True)
        console.print(result.line(), highlight=False, markup=False, soft_wrap=True)
