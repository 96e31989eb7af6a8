"""The diffusers quick-start on the shipped demo folders, as a learner types it: no dtype, the
folder's own scheduler, 20 steps, guidance 7.5; and every scheduler the generate panel offers."""

from __future__ import annotations

import pytest

from labkit import zoo
from labkit.generate.sampling import DEMO_CAVEATS, SCHEDULERS
from labkit.zoo.evaluate import (
    QUICKSTART_GUIDANCE,
    UNKNOWN_WORD,
    quickstart_pipeline,
    scheduler_scores,
)
from labkit.zoo.metrics import colour_accuracy
from labkit.zoo.sample import colour_prompts, generate
from tests.fixtures.lora_samples import single_thread

one_thread = pytest.fixture(scope="module", autouse=True)(single_thread)
RIGHT = 0.75  # the share of colour prompts a usable demo draws in the named colour
DEMOS = {"demo_sd1": "StableDiffusionPipeline", "demo_sdxl": "StableDiffusionXLPipeline"}


@pytest.fixture(scope="module", params=list(DEMOS))
def quickstart(request):
    pipe = quickstart_pipeline(zoo.path(request.param))
    assert type(pipe).__name__ == DEMOS[request.param]
    return pipe


@pytest.mark.slow
@pytest.mark.parametrize("word", ["", UNKNOWN_WORD])
def test_the_plain_quickstart_draws_the_named_colours(quickstart, word):
    dtypes = {m.dtype for m in (quickstart.unet, quickstart.vae, quickstart.text_encoder)}
    assert len(dtypes) == 1  # every part in one dtype, or the first matmul fails
    prompts, colours, seeds = colour_prompts(1, word or None)
    images = generate(quickstart, prompts, seeds, 20, QUICKSTART_GUIDANCE)
    assert colour_accuracy(images, colours) >= RIGHT


@pytest.mark.slow
def test_the_panel_labels_exactly_the_schedulers_that_fail_on_the_demos(quickstart):
    own = quickstart.scheduler
    try:
        scores = scheduler_scores(quickstart, list(SCHEDULERS), steps=(20,), words=("",))
    finally:
        quickstart.scheduler = own
    right = dict(zip(scores["scheduler"], scores["colour_accuracy"] >= RIGHT, strict=True))
    assert {name for name, ok in right.items() if not ok} == set(DEMO_CAVEATS), scores
