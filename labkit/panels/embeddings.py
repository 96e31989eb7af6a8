"""The embeddings panel: a prompt's tokens and ids as you type, a word's or a textual
inversion's nearest tokens, length and place on a map, and the same seed with and without it.

SDXL-style models have two text encoders: the tokens show once per encoder, with what each one
outputs for the UNet, and the look-up works in the encoder picked under Encoder."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from labkit.embeddings.textual_inversion import ENCODERS
from labkit.errors import LabkitError
from labkit.panels.common import (
    CHECKPOINTS,
    Picker,
    demo_names,
    demo_options,
    image_widget,
    run_into,
    show_png,
    table_html,
)
from labkit.panels.generate import MAX_SEED, png_bytes

TI_KINDS = ("textual_inversion",)
NEAREST_K = 8
TOKEN_COLUMNS = ["position", "id", "token", "kind", "norm", "output_norm"]
PAIR_PX = 192  # small demo images are shown enlarged
ENCODER_CHOICES = [("first (text_encoder)", "text_encoder"),
                   ("second (text_encoder_2)", "text_encoder_2")]


def encoders_of(pipe: Any) -> dict[str, str]:
    """The pipeline's text encoders -> the tokenizer feeding each (two for SDXL-style models)."""
    return {enc: tok for tok, enc in ENCODERS if getattr(pipe, enc, None) is not None}


def tokens_html(frame: Any) -> str:
    """The window's non-padding tokens as a table, and a line on the padding (and its token)
    and the cut."""
    shown = frame[frame["kind"] != "padding"]
    padding = frame[frame["kind"] == "padding"]
    cut = int((frame["kind"] == "truncated").sum())
    note = f"{len(padding)} padding position(s) fill the 77-token window"
    if len(padding):
        note += f", each the token {html.escape(str(padding['token'].iloc[0]))}"
    if cut:
        note += f"; <b>{cut} token(s) cut off</b>: the encoder never sees them"
    return table_html(shown[[c for c in TOKEN_COLUMNS if c in shown]]) + f"<p>{note}.</p>"


def prompt_html(pipe: Any, prompt: str) -> str:
    """Each text encoder's tokens for a prompt (input vector length `norm`, output vector length
    `output_norm`), then what the UNet sees: the outputs side by side, and SDXL's pooled vector."""
    from labkit.embeddings import vectors as embeddings
    vectors = embeddings.prompt_vectors(pipe, prompt)
    parts = []
    for enc, tok in encoders_of(pipe).items():
        tokenizer = getattr(pipe, tok)
        frame = embeddings.token_table(tokenizer, getattr(pipe, enc),
                                       pipe.maybe_convert_prompt(prompt, tokenizer))
        in_window = frame["in_window"]
        frame.loc[in_window, "output_norm"] = vectors.per_encoder[enc].norm(dim=-1).numpy().round(4)
        width = vectors.per_encoder[enc].shape[-1]
        parts.append(f"<h4>{enc} ({tok}, {width} wide)</h4>" + tokens_html(frame))
    widths = " + ".join(f"{v.shape[-1]} ({enc})" for enc, v in vectors.per_encoder.items())
    rows, width = vectors.hidden.shape
    sees = f"<p>The UNet's cross-attention sees {rows} vectors {width} wide"
    if len(vectors.per_encoder) > 1:
        sees += f": both encoders' outputs side by side, {widths}"
    if vectors.pooled is not None:
        sees += (f"; the pooled vector of the second encoder (length "
                 f"{float(vectors.pooled.norm()):.3f}) joins the timestep embedding")
    return ("".join(parts) + sees + ".</p><p><i>norm: the length of a token's input vector; "
            "output_norm: of the encoder's output at its position.</i></p>")


def embeddings_panel(model: str | None = None, embedding: str | None = None,
                     device: str = "auto") -> widgets.VBox:
    """Model picker; a prompt box whose tokens show live (per text encoder); a word and an
    embedding to look up (nearest tokens, norms, map) in one encoder; a with/without pair from
    one seed. The embedding dropdown offers the demo embeddings made for the chosen demo model's
    base. `model` and `embedding` preselect demo names or fill the path boxes."""
    from labkit.embeddings import figures as embedding_plots
    from labkit.embeddings import vectors as embeddings
    from labkit.stats.figures import to_png

    model_pick = Picker("Model", [(n, n) for n in demo_names(CHECKPOINTS)], model, "model")
    offered = demo_options(TI_KINDS, model_pick.base())
    ti_pick = Picker("Embedding", offered, embedding or next((n for _, n in offered), None),
                     "embedding", optional=True, path_label="TI path")
    prompt = widgets.Text(value="", description="Prompt", continuous_update=True,
                          placeholder="type a prompt: its tokens show below",
                          layout=widgets.Layout(width="80%"))
    tokens = widgets.HTML()
    tokens.add_class("labkit-tokens")
    word = widgets.Text(value="cat", description="Word", continuous_update=False)
    encoder = widgets.Dropdown(options=ENCODER_CHOICES, value="text_encoder",
                               description="Encoder", layout=widgets.Layout(display="none"))
    look = widgets.Button(description="Look up", icon="search")
    facts = widgets.HTML()
    nearest = widgets.HTML()
    norms, chart = image_widget(), image_widget()
    pair_prompt = widgets.Text(value="a red circle, {token}", description="Pair prompt",
                               layout=widgets.Layout(width="80%"))
    seed = widgets.BoundedIntText(value=0, min=0, max=MAX_SEED, description="Seed")
    steps = widgets.IntSlider(value=20, min=1, max=60, description="Steps")
    pair_button = widgets.Button(description="Generate with and without", icon="paint-brush",
                                 button_style="primary",
                                 layout=widgets.Layout(width="auto", align_self="flex-start"))
    pair = image_widget()
    status = widgets.HTML()
    error = widgets.HTML()
    error.add_class("labkit-error-box")
    out = widgets.Output()
    offering = False  # the embedding dropdown's options are being replaced: no look-up

    def pipe() -> Any:
        from labkit.generate import pipelines
        status.value = "<i>Loading the model (once per model)...</i>"
        loaded = pipelines.cached_pipeline(model_pick.resolve(), device=device, progress=False)
        status.value = ""
        encoder.layout.display = "" if len(encoders_of(loaded)) > 1 else "none"
        return loaded

    def chosen_ti() -> Any:
        path = ti_pick.resolve()
        return None if path is None else embeddings.read_textual_inversion(path)

    def show_tokens() -> None:
        tokens.value = prompt_html(pipe(), prompt.value)

    def show_lookup() -> None:
        from labkit.embeddings.textual_inversion import check_fits

        p = pipe()
        encs = encoders_of(p)
        enc = encoder.value if encoder.value in encs else "text_encoder"
        text_encoder, tokenizer = getattr(p, enc), getattr(p, encs[enc])
        named, marks, tables, lines = {}, {}, [], []
        if len(encs) > 1:
            lines.append(f"<i>This model has {len(encs)} text encoders, each with its own token "
                         f"vectors: looking up in <b>{enc}</b> "
                         f"({text_encoder.get_input_embeddings().weight.shape[-1]} wide). Pick "
                         "the other under Encoder.</i>")
        if word.value.strip():
            vec = embeddings.token_vector(word.value.strip(), text_encoder, tokenizer)
            named[word.value.strip()] = vec
            marks[word.value.strip()] = float(vec.norm())
            lines.append(f"<b>{html.escape(word.value.strip())}</b>: length {vec.norm():.3f}")
            tables.append((word.value.strip(), vec))
        ti = chosen_ti()
        if ti is not None:
            check_fits(p, ti)
            rows = ti.vectors[enc]
            labels = [ti.token] + [f"{ti.token}_{i}" for i in range(1, len(rows))]
            named |= dict(zip(labels, rows, strict=True))
            marks[ti.token] = rows.norm(dim=-1).tolist()
            lengths = "; ".join(f"{e} " + ", ".join(f"{n:.3f}" for n in ns)
                                for e, ns in ti.norms().items())
            step = "" if ti.step is None else f", step {ti.step}"
            lines.append(f"<b>{html.escape(ti.token)}</b> ({ti.form} form{step}): "
                         f"{ti.n_vectors} vector(s) per encoder, length(s) {lengths}")
            tables.append((ti.token, rows[0]))
        if not named:
            raise LabkitError("nothing to look up.", hint="Type a word or pick an embedding.")
        vocab = embeddings.vocabulary_norms(text_encoder, tokenizer)
        lines.append(f"vocabulary ({enc}): median length {vocab.median():.3f}, longest "
                     f"{vocab.max():.3f}")
        facts.value = "<br>".join(lines)
        nearest.value = "".join(
            f"<b>Nearest tokens to {html.escape(label)}</b> ({enc})"
            + table_html(embeddings.nearest_tokens(v, text_encoder, tokenizer, NEAREST_K))
            for label, v in tables)
        show_png(norms, to_png(embedding_plots.norm_histogram(
            vocab, marks, title=f"Length of every token's vector ({enc})")))
        frame = embeddings.neighbour_map(named, text_encoder, tokenizer, k=4)
        show_png(chart, to_png(embedding_plots.map_figure(frame, highlight=list(named))))

    def make_pair() -> None:
        from labkit.generate.grids import image_grid

        ti = chosen_ti()
        if ti is None:
            raise LabkitError("no embedding chosen.", hint="Pick an embedding to compare.")
        status.value = "<i>Denoising twice (same seed)...</i>"
        images = embeddings.with_and_without(pipe(), ti, pair_prompt.value.replace(
            "{token}", ti.token), seed=seed.value, steps=steps.value, progress=False)
        show_png(pair, png_bytes(image_grid([images["without"], images["with"]], 1, 2,
                                         col_labels=["without", f"with {ti.token}"],
                                         cell_px=max(PAIR_PX, images["with"].width))))
        status.value = f"seed {seed.value}, {steps.value} steps"

    def on_model(_: Any) -> None:
        nonlocal offering
        offering = True
        try:
            ti_pick.offer(demo_options(TI_KINDS, model_pick.base()))
        finally:
            offering = False

    def on_prompt(_: Any) -> None:
        run_into(out, error, show_tokens)

    def on_look(_: Any) -> None:
        if not offering:
            run_into(out, error, show_lookup)

    def on_pair(_: Any) -> None:
        pair_button.disabled = True
        try:
            run_into(out, error, make_pair)
        finally:
            pair_button.disabled = False
            if error.value:
                status.value = ""

    model_pick.choice.observe(on_model, names="value")
    model_pick.path.observe(on_model, names="value")
    prompt.observe(on_prompt, names="value")
    for control in (word, ti_pick.choice, encoder):
        control.observe(on_look, names="value")
    look.on_click(on_look)
    pair_button.on_click(on_pair)
    return widgets.VBox([
        widgets.HTML("<h3>Embeddings</h3>"), model_pick.widget, error, status,
        widgets.HTML("<b>Tokens</b>: how the text encoder(s) read your prompt"), prompt, tokens,
        widgets.HTML("<b>Look up</b> a word and an embedding"), widgets.HBox([word, encoder]),
        ti_pick.widget, look, facts, nearest, norms, chart,
        widgets.HTML("<b>With and without</b> the embedding, same seed"), pair_prompt,
        widgets.HBox([seed, steps]), pair_button, pair, out,
    ])
