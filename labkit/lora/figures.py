"""The LoRA lab's figures: where a LoRA changes the model, how low-rank the change is, how it
was trained (kohya metadata)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from labkit.identify.blocks import block_sort_key

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COMPONENT_COLOURS = {"unet": "#1c64f2", "transformer": "#1c64f2", "text_encoder": "#e3a008",
                     "text_encoder_2": "#9061f9", "text_encoder_3": "#e74694"}
TRAINING_KEYS = ("ss_network_module", "ss_network_dim", "ss_network_alpha",
                 "ss_base_model_version", "ss_sd_model_name", "ss_resolution", "ss_steps",
                 "ss_epoch", "ss_learning_rate", "ss_training_comment", "modelspec.architecture",
                 "modelspec.title", "modelspec.trigger_phrase")
LEGEND_CHARS = 90  # a legend line under a 7-inch plot at 8 pt


def _figure(width: float = 8, height: float = 3.2, n: int = 1) -> tuple[Figure, Any]:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(width, height), squeeze=False)
    plt.close(fig)
    return fig, axes[0] if n > 1 else axes[0][0]


def block_norms(frame: pd.DataFrame) -> pd.DataFrame:
    """The delta's size per block (root of the summed squared module norms) and module count,
    in UNet order (BASE first; a transformer's D00.. / S00.. / J00.. blocks in their order)."""
    if frame.empty:
        return pd.DataFrame(columns=["block", "component", "delta_norm", "modules"])
    grouped = frame.groupby(["block", "component"], sort=False).agg(
        delta_norm=("delta_norm", lambda s: float((s.astype(float) ** 2).sum() ** 0.5)),
        modules=("module", "size")).reset_index()
    return grouped.sort_values("block", key=lambda s: s.map(lambda b: (block_sort_key(b), b)),
                               kind="stable").reset_index(drop=True)


def block_norm_figure(frame: pd.DataFrame, title: str = "") -> Figure:
    """Bar chart of the delta's norm per SD block, in UNet order, coloured by component."""
    table = block_norms(frame)
    fig, ax = _figure()
    colours = [COMPONENT_COLOURS.get(c, "#6b7280") for c in table["component"]]
    ax.bar(range(len(table)), table["delta_norm"], color=colours)
    ax.set_xticks(range(len(table)), table["block"], rotation=60, fontsize=8)
    ax.set_ylabel("‖ΔW‖ (Frobenius)")
    ax.set_title(title or "Where the LoRA changes the model (strength 1)")
    if len(table):
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(color=COMPONENT_COLOURS.get(c, "#6b7280"), label=c)
                           for c in dict.fromkeys(table["component"])], fontsize=8)
    fig.tight_layout()
    return fig


def legend_label(name: str, max_chars: int = LEGEND_CHARS) -> str:
    """A legend entry of at most `max_chars`: a long name loses the middle of its module path,
    never its lead ("LoKr: ") nor its end (the layer's own name)."""
    if len(name) <= max_chars:
        return name
    lead, sep, module = name.rpartition(": ")
    head = lead + sep
    keep = max(max_chars - len(head) - 1, 8)
    return f"{head}{module[:keep // 3]}…{module[-(keep - keep // 3):]}"


def spectrum_figure(spectra: Mapping[str, Sequence[float]], title: str = "") -> Figure:
    """Singular values of chosen modules' deltas (log scale): a LoRA of rank r has r of them.
    The legend sits under the plot, one whole line per module (its lead, e.g. "LoKr: ", kept)."""
    fig, ax = _figure(7, 3.0 + 0.22 * len(spectra))
    fig.set_layout_engine("constrained")
    for name, values in spectra.items():
        values = [float(v) for v in values]
        ax.semilogy(range(1, len(values) + 1), [max(v, 1e-12) for v in values], marker="o",
                    markersize=3, label=legend_label(name))
    ax.set_xlabel("index")
    ax.set_ylabel("singular value")
    ax.set_title(title or "Singular values of ΔW")
    if spectra:
        fig.legend(loc="outside lower center", fontsize=8, frameon=False)
    return fig


def spectra(path: str | Path, modules: Sequence[str] | None = None, top: int = 4,
            model: Any = None, max_values: int = 64) -> dict[str, list[float]]:
    """{module: singular values} for `modules` (model module names), by default the `top`
    modules with the largest delta. Raises what labkit.lora.reading raises."""
    from labkit.lora import anatomy as M
    from labkit.lora.reading import open_adapter

    adapter = open_adapter(path, model)
    chosen = list(modules) if modules is not None else None
    found = {}
    for module, target in adapter.matched:
        if chosen is None or target.module in chosen:
            t = adapter.tensors(module)
            found[target.module] = [float(v) for v in M.singular_values(module.kind, t)[:max_values]]
    if chosen is None:
        found = dict(sorted(found.items(), key=lambda kv: -sum(v * v for v in kv[1]))[:top])
    return found


def rank_alpha(frame: pd.DataFrame) -> pd.DataFrame:
    """How many modules have each (kind, rank, alpha, scale = alpha / rank)."""
    cols = ["kind", "rank", "alpha", "scale"]
    if frame.empty:
        return pd.DataFrame(columns=[*cols, "modules"])
    return (frame[cols].astype(str).value_counts().rename("modules").reset_index()
            .sort_values("modules", ascending=False, kind="stable").reset_index(drop=True))


def rank_alpha_figure(frame: pd.DataFrame) -> Figure:
    """Modules per rank/alpha/scale: most files use one rank and one alpha everywhere."""
    table = rank_alpha(frame)
    fig, ax = _figure(6, 2.8)
    labels = [f"{k} r={r} α={a} → scale {s}" for k, r, a, s in
              table[["kind", "rank", "alpha", "scale"]].itertuples(index=False)]
    ax.barh(range(len(table)), table["modules"], color="#0e9f6e")
    ax.set_yticks(range(len(table)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("modules")
    ax.set_title("Rank and alpha (scale = alpha / rank)")
    fig.tight_layout()
    return fig


def training_table(metadata: Mapping[str, str]) -> pd.DataFrame:
    """The kohya training settings a file carries (network, dim, alpha, base, steps, ...)."""
    from labkit.files.metadata import metadata_table

    table = metadata_table(metadata)
    return table[table["key"].isin(TRAINING_KEYS)].reset_index(drop=True)


def tag_figure(metadata: Mapping[str, str], top: int = 20) -> Figure:
    """Bar chart of the most frequent caption tags of the training set (ss_tag_frequency)."""
    from labkit.files.metadata import tag_frequency

    tags = tag_frequency(metadata).groupby("tag", sort=False)["count"].sum()
    tags = tags.sort_values(ascending=False, kind="stable").head(top)
    fig, ax = _figure(6, max(2.0, 0.25 * len(tags) + 0.8))
    ax.barh(range(len(tags)), tags.to_numpy(), color="#c27803")
    ax.set_yticks(range(len(tags)), list(tags.index), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("captions")
    ax.set_title("Training tags" if len(tags) else "No tag frequency in this file's metadata")
    fig.tight_layout()
    return fig
