import json

from labkit.files.metadata import decode_metadata, metadata_table, modelspec, tag_frequency

KOHYA = {
    "ss_network_dim": "32",
    "ss_network_alpha": "16.0",
    "ss_learning_rate": "1e-4",
    "ss_resolution": "(512, 512)",
    "ss_cache_latents": "True",
    "ss_noise_offset": "None",
    "ss_sd_model_name": "123",
    "sshs_model_hash": "0123456789",
    "ss_seed": "007",
    "ss_tag_frequency": json.dumps({"10_cat": {"cat": 12, " sitting": 3, "tabby": "5"},
                                    "5_dog": {"dog": 8, "cat": 1}}),
    "ss_dataset_dirs": json.dumps({"10_cat": {"n_repeats": 10, "img_count": 12}}),
    "ss_bucket_info": "{not json",
    "modelspec.architecture": "stable-diffusion-v1/lora",
    "modelspec.title": "My cat",
    "format": "pt",
}


def test_json_in_strings_is_decoded_and_invalid_json_kept():
    decoded = decode_metadata(KOHYA)
    assert decoded["ss_tag_frequency"]["10_cat"]["cat"] == 12
    assert decoded["ss_dataset_dirs"] == {"10_cat": {"n_repeats": 10, "img_count": 12}}
    assert decoded["ss_bucket_info"] == "{not json"
    assert list(decoded) == list(KOHYA)


def test_only_clear_numbers_and_literals_are_converted():
    decoded = decode_metadata(KOHYA)
    assert decoded["ss_network_dim"] == 32 and isinstance(decoded["ss_network_dim"], int)
    assert decoded["ss_network_alpha"] == 16.0
    assert decoded["ss_learning_rate"] == 1e-4
    assert decoded["ss_cache_latents"] is True and decoded["ss_noise_offset"] is None
    assert decoded["ss_resolution"] == "(512, 512)"
    assert decoded["ss_seed"] == "007"
    # names and hashes stay text even when all digits
    assert decoded["ss_sd_model_name"] == "123" and decoded["sshs_model_hash"] == "0123456789"


def test_metadata_table_groups_keys_and_cuts_long_values():
    table = metadata_table(KOHYA, max_chars=30)
    assert list(table.columns) == ["key", "value", "group"]
    groups = dict(zip(table["key"], table["group"], strict=True))
    assert groups["ss_network_dim"] == groups["sshs_model_hash"] == "kohya training"
    assert groups["modelspec.title"] == "modelspec" and groups["format"] == "other"
    assert table["group"].tolist() == sorted(table["group"], key=["kohya training", "modelspec",
                                                                 "other"].index)
    freq = table.loc[table["key"] == "ss_tag_frequency", "value"].item()
    assert freq.startswith('{"10_cat"') and "characters)" in freq


def test_tag_frequency_sorted_by_count_with_stripped_tags():
    tags = tag_frequency(KOHYA)
    assert list(tags.columns) == ["dataset", "tag", "count"]
    assert tags.iloc[0].tolist() == ["10_cat", "cat", 12]
    assert tags["count"].tolist() == sorted(tags["count"], reverse=True)
    assert "sitting" in tags["tag"].tolist()
    assert tags.loc[tags["tag"] == "tabby", "count"].item() == 5
    assert len(tags) == 5


def test_tag_frequency_falls_back_to_ss_datasets_and_is_empty_without_tags():
    raw = {"ss_datasets": json.dumps([{"tag_frequency": {"img": {"a": 2, "b": 4}}},
                                      {"no_tags": True}])}
    assert tag_frequency(raw)[["tag", "count"]].values.tolist() == [["b", 4], ["a", 2]]
    empty = tag_frequency({"format": "pt"})
    assert empty.empty and list(empty.columns) == ["dataset", "tag", "count"]


def test_modelspec_strips_the_prefix():
    assert modelspec(KOHYA) == {"architecture": "stable-diffusion-v1/lora", "title": "My cat"}
