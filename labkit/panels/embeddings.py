"""The embeddings panel: a prompt's tokens and ids as you type, a word's or a textual
inversion's nearest tokens, length and place on a map, and the same seed with and without it."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from labkit.errors import LabkitError
from labkit.panels.common import run_into, table_html
from labkit.panels.generate import MAX_SEED, PATH_CHOICE, demo_checkpoints, png_bytes

NO_EMBEDDING = "(none)"
NEAREST_K = 8
TOKEN_COLUMNS = ["position", "id", "token", "kind", "norm"]
PAIR_PX = 192  # small demo images are shown enlarged


def _demo(kind: str) -> list[str]:
    try:
        from labkit import zoo

        return [e["name"] for e in zoo.manifest() if e["kind"] == kind]
    except (ImportError, LabkitError):
        return []


def demo_embeddings() -> list[str]:
    """The demo world's textual inversions (every form), or [] when it is not there."""
    return _demo("textual_inversion")


def _path(choice: str, typed: str, what: str) -> Path:
    if typed.strip():
        return Path(typed.strip()).expanduser()
    if choice == PATH_CHOICE:
        raise LabkitError(f"no {what} chosen.", hint=f"Pick a demo {what} or type a path.")
    from labkit import zoo

    return zoo.path(choice)


def _image() -> widgets.Image:
    """An image widget hidden until it has a picture (an empty one shows as a broken icon)."""
    return widgets.Image(format="png", layout=widgets.Layout(display="none"))


def _show(image: widgets.Image, png: bytes) -> None:
    image.value = png
    image.layout.display = ""


def tokens_html(frame: Any) -> str:
    """The window's non-padding tokens as a table, and a line on the padding and the cut."""
    shown = frame[frame["kind"] != "padding"]
    pads = int((frame["kind"] == "padding").sum())
    cut = int((frame["kind"] == "truncated").sum())
    note = f"{pads} padding position(s) fill the 77-token window"
    if cut:
        note += f"; <b>{cut} token(s) cut off</b>: the encoder never sees them"
    return table_html(shown[TOKEN_COLUMNS]) + f"<p>{note}.</p>"


def embeddings_panel(model: str | None = None, embedding: str | None = None,
                     device: str = "auto") -> widgets.VBox:
    """Model picker; a prompt box whose tokens show live; a word and an embedding to look up
    (nearest tokens, norms, map); a with/without pair from one seed. `model` and `embedding`
    preselect demo names or fill the path boxes."""
    from labkit import embedding_plots, embeddings
    from labkit.stats_plots import to_png

    models, embs = demo_checkpoints(), demo_embeddings()
    picker = widgets.Dropdown(options=[*models, PATH_CHOICE], description="Model",
                              value=model if model in models else (models or [PATH_CHOICE])[0])
    path = widgets.Text(value="" if model in models or model is None else str(model),
                        description="Path", layout=widgets.Layout(width="60%"))
    prompt = widgets.Text(value="", description="Prompt", continuous_update=True,
                          placeholder="type a prompt: its tokens show below",
                          layout=widgets.Layout(width="80%"))
    tokens = widgets.HTML()
    tokens.add_class("labkit-tokens")
    word = widgets.Text(value="cat", description="Word", continuous_update=False)
    ti_picker = widgets.Dropdown(
        options=[NO_EMBEDDING, *embs, PATH_CHOICE], description="Embedding",
        value=embedding if embedding in embs else (embs[0] if embs else NO_EMBEDDING))
    ti_path = widgets.Text(value="" if embedding in embs or embedding is None else str(embedding),
                           description="TI path", layout=widgets.Layout(width="60%"))
    look = widgets.Button(description="Look up", icon="search")
    facts = widgets.HTML()
    nearest = widgets.HTML()
    norms, chart = _image(), _image()
    pair_prompt = widgets.Text(value="a red circle, {token}", description="Pair prompt",
                               layout=widgets.Layout(width="80%"))
    seed = widgets.BoundedIntText(value=0, min=0, max=MAX_SEED, description="Seed")
    steps = widgets.IntSlider(value=20, min=1, max=60, description="Steps")
    pair_button = widgets.Button(description="Generate with and without", icon="paint-brush",
                                 button_style="primary", layout=widgets.Layout(width="auto"))
    pair = _image()
    status = widgets.HTML()
    error = widgets.HTML()
    error.add_class("labkit-error-box")
    out = widgets.Output()

    def pipe() -> Any:
        from labkit import pipelines

        status.value = "<i>Loading the model (once per model)...</i>"
        loaded = pipelines.cached_pipeline(_path(picker.value, path.value, "model"),
                                           device=device, progress=False)
        status.value = ""
        return loaded

    def chosen_ti() -> Any:
        if ti_picker.value == NO_EMBEDDING and not ti_path.value.strip():
            return None
        return embeddings.read_textual_inversion(_path(ti_picker.value, ti_path.value,
                                                       "embedding"))

    def show_tokens() -> None:
        p = pipe()
        tokens.value = tokens_html(embeddings.token_table(
            p.tokenizer, p.text_encoder, p.maybe_convert_prompt(prompt.value, p.tokenizer)))

    def show_lookup() -> None:
        from labkit.textual_inversion import check_fits

        p = pipe()
        named, marks, tables, lines = {}, {}, [], []
        if word.value.strip():
            vec = embeddings.token_vector(word.value.strip(), p.text_encoder, p.tokenizer)
            named[word.value.strip()] = vec
            marks[word.value.strip()] = float(vec.norm())
            lines.append(f"<b>{html.escape(word.value.strip())}</b>: length {vec.norm():.3f}")
            tables.append((word.value.strip(), vec))
        ti = chosen_ti()
        if ti is not None:
            check_fits(p, ti)
            rows = ti.vectors["text_encoder"]
            labels = [ti.token] + [f"{ti.token}_{i}" for i in range(1, len(rows))]
            named |= dict(zip(labels, rows, strict=True))
            marks[ti.token] = rows.norm(dim=-1).tolist()
            lines.append(f"<b>{html.escape(ti.token)}</b> ({ti.form} form, step {ti.step}): "
                         f"{len(rows)} vector(s), length(s) "
                         + ", ".join(f"{n:.3f}" for n in rows.norm(dim=-1).tolist()))
            tables.append((ti.token, rows[0]))
        if not named:
            raise LabkitError("nothing to look up.", hint="Type a word or pick an embedding.")
        vocab = embeddings.vocabulary_norms(p.text_encoder, p.tokenizer)
        lines.append(f"vocabulary: median length {vocab.median():.3f}, longest {vocab.max():.3f}")
        facts.value = "<br>".join(lines)
        nearest.value = "".join(
            f"<b>Nearest tokens to {html.escape(label)}</b>"
            + table_html(embeddings.nearest_tokens(v, p.text_encoder, p.tokenizer, NEAREST_K))
            for label, v in tables)
        _show(norms, to_png(embedding_plots.norm_histogram(vocab, marks)))
        frame = embeddings.neighbour_map(named, p.text_encoder, p.tokenizer, k=4)
        _show(chart, to_png(embedding_plots.map_figure(frame, highlight=list(named))))

    def make_pair() -> None:
        from labkit.plots import image_grid

        ti = chosen_ti()
        if ti is None:
            raise LabkitError("no embedding chosen.", hint="Pick an embedding to compare.")
        status.value = "<i>Denoising twice (same seed)...</i>"
        images = embeddings.with_and_without(pipe(), ti, pair_prompt.value.replace(
            "{token}", ti.token), seed=seed.value, steps=steps.value, progress=False)
        _show(pair, png_bytes(image_grid([images["without"], images["with"]], 1, 2,
                                         col_labels=["without", f"with {ti.token}"],
                                         cell_px=max(PAIR_PX, images["with"].width))))
        status.value = f"seed {seed.value}, {steps.value} steps"

    def on_prompt(_: Any) -> None:
        run_into(out, error, show_tokens)

    def on_look(_: Any) -> None:
        run_into(out, error, show_lookup)

    def on_pair(_: Any) -> None:
        pair_button.disabled = True
        try:
            run_into(out, error, make_pair)
        finally:
            pair_button.disabled = False
            if error.value:
                status.value = ""

    prompt.observe(on_prompt, names="value")
    word.observe(on_look, names="value")
    ti_picker.observe(on_look, names="value")
    look.on_click(on_look)
    pair_button.on_click(on_pair)
    return widgets.VBox([
        widgets.HTML("<h3>Embeddings</h3>"), widgets.HBox([picker, path]), error, status,
        widgets.HTML("<b>Tokens</b>: how the text encoder reads your prompt"), prompt, tokens,
        widgets.HTML("<b>Look up</b> a word and an embedding"), widgets.HBox([word, ti_picker]),
        ti_path, look, facts, nearest, norms, chart,
        widgets.HTML("<b>With and without</b> the embedding, same seed"), pair_prompt,
        widgets.HBox([seed, steps]), pair_button, pair, out,
    ])
