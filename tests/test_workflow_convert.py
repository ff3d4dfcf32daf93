"""UI workflow -> API prompt conversion (loom.graph.workflow)."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_workflow_fixtures import DATA, NODE_DEFS, load, make_registry

from loom.engine.validate import validate_prompt
from loom.graph.errors import PromptError
from loom.graph.workflow import convert_workflow, is_ui_workflow, looks_like_api_prompt


def expected(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def node(wf: dict, node_id: int) -> dict:
    return next(n for n in wf["nodes"] if n["id"] == node_id)


def convert_error(wf, node_defs=NODE_DEFS) -> PromptError:
    with pytest.raises(PromptError) as info:
        convert_workflow(wf, node_defs)
    assert info.value.type == "invalid_workflow"
    return info.value


# -- whole fixture workflows, against hand-checked prompts ------------------------------------


@pytest.mark.parametrize("name", ["default_txt2img", "reroutes_bypass_mute", "primitives_widgets",
                                  "subgraph"])
def test_fixture_converts_to_the_hand_checked_prompt(name):
    prompt = convert_workflow(load(f"{name}.json"), NODE_DEFS)
    assert prompt == expected(f"{name}.prompt.json")


@pytest.mark.parametrize("name", ["default_txt2img", "reroutes_bypass_mute", "primitives_widgets",
                                  "subgraph"])
def test_converted_fixtures_pass_validation(name):
    prompt = convert_workflow(load(f"{name}.json"), NODE_DEFS)
    validated = validate_prompt(prompt, make_registry())
    assert validated.outputs  # the SaveImage nodes


def test_default_workflow_details():
    prompt = convert_workflow(load("default_txt2img.json"), NODE_DEFS)
    ks = prompt["3"]["inputs"]
    # the "randomize" control value after the seed is skipped, so steps is 20, not "randomize"
    assert ks["seed"] == 156680208700286 and ks["steps"] == 20 and ks["cfg"] == 8
    assert ks["model"] == ["4", 0] and ks["latent_image"] == ["5", 0]
    assert "randomize" not in json.dumps(prompt)
    assert set(prompt) == {"3", "4", "5", "6", "7", "8", "9"}  # groups leave no trace
    assert all(isinstance(k, str) for k in prompt)


def test_prompt_order_follows_execution_order():
    assert list(convert_workflow(load("default_txt2img.json"), NODE_DEFS)) == [
        "5", "4", "6", "7", "3", "8", "9"]


def test_links_in_object_form():
    wf = load("default_txt2img.json")
    wf["links"] = [dict(zip(["id", "origin_id", "origin_slot", "target_id", "target_slot", "type"],
                            link, strict=True)) for link in wf["links"]]
    assert convert_workflow(wf, NODE_DEFS) == expected("default_txt2img.prompt.json")


def test_string_node_ids_and_null_link_holes():
    wf = load("default_txt2img.json")
    wf["links"].insert(3, None)  # old editors leave holes
    for n in wf["nodes"]:
        n["id"] = str(n["id"])
    assert convert_workflow(wf, NODE_DEFS) == expected("default_txt2img.prompt.json")


@settings(max_examples=25, deadline=None)
@given(st.randoms(use_true_random=False))
def test_node_list_order_does_not_matter(rnd):
    wf = load("reroutes_bypass_mute.json")
    rnd.shuffle(wf["nodes"])
    rnd.shuffle(wf["links"])
    assert convert_workflow(wf, NODE_DEFS) == expected("reroutes_bypass_mute.prompt.json")


def test_without_order_fields_the_list_order_is_kept():
    wf = load("default_txt2img.json")
    for n in wf["nodes"]:
        del n["order"]
    assert list(convert_workflow(wf, NODE_DEFS)) == ["7", "6", "5", "3", "8", "9", "4"]


# -- widget values ------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**64 - 1), steps=st.integers(1, 150),
       cfg=st.floats(0, 30, allow_nan=False), sampler=st.sampled_from(["euler", "dpmpp_2m"]),
       control=st.sampled_from([None, "fixed", "increment", "decrement", "randomize"]),
       denoise=st.floats(0, 1, allow_nan=False))
def test_seed_control_value_is_skipped_when_present(seed, steps, cfg, sampler, control, denoise):
    wf = load("default_txt2img.json")
    values = [seed] + ([control] if control else []) + [steps, cfg, sampler, "karras", denoise]
    node(wf, 3)["widgets_values"] = values
    inputs = convert_workflow(wf, NODE_DEFS)["3"]["inputs"]
    assert (inputs["seed"], inputs["steps"], inputs["cfg"], inputs["sampler_name"],
            inputs["scheduler"], inputs["denoise"]) == (seed, steps, cfg, sampler, "karras", denoise)


def test_old_workflows_seed_named_int_gets_a_control_value_too():
    """An INT named seed/noise_seed has a control value even if the node does not declare one."""
    defs = {"Noise": {"input": {"required": {"noise_seed": ["INT", {"default": 0}],
                                             "strength": ["FLOAT", {"default": 1.0}]}},
                      "input_order": {"required": ["noise_seed", "strength"]},
                      "output": ["NOISE"], "name": "Noise", "display_name": "Noise"}}
    wf = {"nodes": [{"id": 1, "type": "Noise", "mode": 0, "widgets_values": [5, "fixed", 0.5]}],
          "links": []}
    assert convert_workflow(wf, defs)["1"]["inputs"] == {"noise_seed": 5, "strength": 0.5}


def test_combo_with_control_after_generate():
    defs = {"Pick": {"input": {"required": {"choice": [["a", "b", "c"], {"control_after_generate": True}],
                                            "n": ["INT", {"default": 1}]}},
                     "output": ["STRING"], "name": "Pick"}}
    wf = {"nodes": [{"id": 1, "type": "Pick", "mode": 0, "widgets_values": ["b", "increment", 4]}]}
    assert convert_workflow(wf, defs)["1"]["inputs"] == {"choice": "b", "n": 4}


@pytest.mark.parametrize("values, image", [(["cat.png", "image"], "cat.png"), (["cat.png"], "cat.png"),
                                           ([], "example.png")])
def test_load_image_upload_value_is_skipped(values, image):
    wf = load("primitives_widgets.json")
    node(wf, 16)["widgets_values"] = values
    assert convert_workflow(wf, NODE_DEFS)["16"]["inputs"] == {"image": image}


@pytest.mark.parametrize("values", [["example.png", "red", "image"], ["example.png", "red"],
                                    ["example.png", "red", None]])
def test_upload_value_comes_after_all_required_widgets(values):
    wf = load("primitives_widgets.json")
    node(wf, 17)["widgets_values"] = values
    assert convert_workflow(wf, NODE_DEFS)["17"]["inputs"] == {"image": "example.png", "channel": "red"}


UPLOAD_DEFS = {"LoadFrame": {
    "input": {"required": {"video": [["a.mp4", "b.mp4"], {"video_upload": True}]},
              "optional": {"frame": ["INT", {"default": 0}]}},
    "input_order": {"required": ["video"], "optional": ["frame"]},
    "output": ["IMAGE"], "name": "LoadFrame"}}


@pytest.mark.parametrize("values", [["b.mp4", "video", 7], ["b.mp4", "whatever the button says", 7],
                                    ["b.mp4", None, 7]])
def test_upload_value_before_optional_widgets_is_skipped(values):
    wf = {"nodes": [{"id": 1, "type": "LoadFrame", "mode": 0, "widgets_values": values}]}
    assert convert_workflow(wf, UPLOAD_DEFS)["1"]["inputs"] == {"video": "b.mp4", "frame": 7}


def test_missing_upload_value_before_optional_widgets():
    wf = {"nodes": [{"id": 1, "type": "LoadFrame", "mode": 0, "widgets_values": ["b.mp4", 7]}]}
    assert convert_workflow(wf, UPLOAD_DEFS)["1"]["inputs"] == {"video": "b.mp4", "frame": 7}


def test_missing_widget_values_take_the_declared_defaults():
    wf = load("default_txt2img.json")
    node(wf, 3)["widgets_values"] = [7, "fixed", 30]
    del node(wf, 5)["widgets_values"]
    prompt = convert_workflow(wf, NODE_DEFS)
    assert prompt["3"]["inputs"] | {"model": 0, "positive": 0, "negative": 0, "latent_image": 0} == {
        "seed": 7, "steps": 30, "cfg": 8.0, "sampler_name": "euler", "scheduler": "normal",
        "denoise": 1.0, "model": 0, "positive": 0, "negative": 0, "latent_image": 0}
    assert prompt["5"]["inputs"] == {"width": 512, "height": 512, "batch_size": 1}


def test_null_widget_value_takes_the_default():
    wf = load("default_txt2img.json")
    node(wf, 5)["widgets_values"] = [None, 640, 2]
    assert convert_workflow(wf, NODE_DEFS)["5"]["inputs"] == {"width": 512, "height": 640, "batch_size": 2}


def test_extra_widget_values_are_ignored():
    wf = load("default_txt2img.json")
    node(wf, 5)["widgets_values"] = [640, 480, 3, "left over", 99]
    assert convert_workflow(wf, NODE_DEFS)["5"]["inputs"] == {"width": 640, "height": 480, "batch_size": 3}


def test_optional_widgets_come_after_required_ones():
    wf = {"nodes": [{"id": 1, "type": "TextWithOptions", "mode": 0, "widgets_values": ["a", 5, "?", 9]}]}
    assert convert_workflow(wf, NODE_DEFS)["1"]["inputs"] == {"text": "a", "count": 5, "suffix": "?",
                                                              "repeat": 9}


def test_dict_widgets_values_are_matched_by_name():
    wf = {"nodes": [{"id": 1, "type": "TextWithOptions", "mode": 0,
                     "widgets_values": {"repeat": 2, "text": "b", "junk": [1, 2]}}]}
    assert convert_workflow(wf, NODE_DEFS)["1"]["inputs"] == {"text": "b", "count": 3, "suffix": "!",
                                                              "repeat": 2}


def test_widgets_values_of_the_wrong_type_is_an_error():
    wf = load("default_txt2img.json")
    node(wf, 5)["widgets_values"] = "512x512"
    err = convert_error(wf)
    assert "5" in err.node_errors and "widgets_values" in err.message


HAND_DEFS = {
    "Thing": {
        "input": {"required": {"text": ["STRING", {"forceInput": True}],
                               "mode": ["COMBO", {"options": ["fast", "slow"]}],
                               "amount": ["FLOAT", {}]},
                  "optional": {"extra": ["IMAGE"], "note": ["STRING", {"default": "n"}]}},
        "output": ["IMAGE"], "name": "Thing", "display_name": "The Thing",
    },
}


def test_object_info_without_input_order_and_new_style_combo():
    """forceInput strings take no widget value; "COMBO" with options; dict order when no input_order."""
    wf = {"nodes": [{"id": 2, "type": "Thing", "mode": 0, "widgets_values": ["slow", 0.5, "x"]}]}
    assert convert_workflow(wf, HAND_DEFS)["2"] == {
        "inputs": {"mode": "slow", "amount": 0.5, "note": "x"}, "class_type": "Thing",
        "_meta": {"title": "The Thing"}}


def test_required_widget_without_value_or_default_is_an_error():
    wf = {"nodes": [{"id": 2, "type": "Thing", "mode": 0, "widgets_values": ["slow"]}]}
    err = convert_error(wf, HAND_DEFS)
    assert "'amount'" in err.message and "node 2 (Thing)" in err.message
    assert err.node_errors["2"]["errors"][0]["extra_info"]["input_name"] == "amount"
    # a combo's first choice is its default
    wf["nodes"][0]["widgets_values"] = [None, 1.0]
    assert convert_workflow(wf, HAND_DEFS)["2"]["inputs"]["mode"] == "fast"


def test_converted_widget_with_a_link_uses_the_link():
    wf = load("primitives_widgets.json")
    prompt = convert_workflow(wf, NODE_DEFS)
    assert prompt["13"]["inputs"]["steps"] == ["41", 0]  # linked from a PrimitiveInt node
    assert prompt["5"]["inputs"]["width"] == 1024  # converted but unconnected: the widget value


def test_old_style_converted_widget_input():
    """Old editors list a converted widget as an extra input with widget.name (and a config)."""
    wf = load("default_txt2img.json")
    wf["nodes"].append({"id": 20, "type": "PrimitiveInt", "mode": 0, "order": 0, "inputs": [],
                        "outputs": [{"name": "INT", "type": "INT", "links": [30]}],
                        "widgets_values": [64, "fixed"]})
    node(wf, 3)["inputs"].append({"name": "steps", "type": "INT", "link": 30,
                                  "widget": {"name": "steps", "config": ["INT", {"default": 20}]}})
    wf["links"].append([30, 20, 0, 3, 4, "INT"])
    prompt = convert_workflow(wf, NODE_DEFS)
    assert prompt["3"]["inputs"]["steps"] == ["20", 0]
    assert prompt["3"]["inputs"]["cfg"] == 8  # the widget values still line up


def test_node_title_goes_to_meta():
    prompt = convert_workflow(load("primitives_widgets.json"), NODE_DEFS)
    assert prompt["3"]["_meta"] == {"title": "Base sampler"}
    assert prompt["8"]["_meta"] == {"title": "VAE Decode"}  # no title: the display name


def test_undeclared_linked_inputs_are_kept():
    """Inputs a node adds as they are connected (not in /object_info) still carry their links."""
    wf = load("default_txt2img.json")
    node(wf, 9)["inputs"].append({"name": "images_2", "type": "IMAGE", "link": 30})
    wf["links"].append([30, 8, 0, 9, 1, "IMAGE"])
    assert convert_workflow(wf, NODE_DEFS)["9"]["inputs"]["images_2"] == ["8", 0]


# -- primitives, reroutes, set/get ----------------------------------------------------------


def test_primitive_node_feeds_its_value_to_every_target():
    prompt = convert_workflow(load("primitives_widgets.json"), NODE_DEFS)
    assert prompt["3"]["inputs"]["seed"] == prompt["13"]["inputs"]["seed"] == 8675309
    assert prompt["5"]["inputs"]["height"] == 768
    assert "40" not in prompt and "44" not in prompt


def test_primitive_node_feeding_a_combo():
    wf = load("default_txt2img.json")
    wf["nodes"].append({"id": 20, "type": "PrimitiveNode", "mode": 0,
                        "outputs": [{"name": "COMBO", "type": "COMBO", "links": [30],
                                     "widget": {"name": "sampler_name"}}],
                        "widgets_values": ["dpmpp_2m", "fixed", ""]})
    node(wf, 3)["inputs"].append({"name": "sampler_name", "type": "COMBO", "link": 30,
                                  "widget": {"name": "sampler_name"}})
    wf["links"].append([30, 20, 0, 3, 4, "COMBO"])
    assert convert_workflow(wf, NODE_DEFS)["3"]["inputs"]["sampler_name"] == "dpmpp_2m"


def test_primitive_without_a_value_on_a_required_widget_falls_back_to_the_widget():
    wf = load("primitives_widgets.json")
    node(wf, 40)["widgets_values"] = []
    assert convert_workflow(wf, NODE_DEFS)["3"]["inputs"]["seed"] == 1111


def test_reroute_chains_are_followed():
    prompt = convert_workflow(load("reroutes_bypass_mute.json"), NODE_DEFS)
    assert prompt["3"]["inputs"]["model"] == ["4", 0]  # 4 -> bypassed lora -> reroute -> reroute
    assert prompt["6"]["inputs"]["clip"] == prompt["7"]["inputs"]["clip"] == ["4", 1]
    assert prompt["8"]["inputs"]["vae"] == ["4", 2]
    assert not {"20", "21", "22", "23"} & set(prompt)


def test_reroute_without_input_is_an_error_for_a_required_input():
    wf = load("reroutes_bypass_mute.json")
    node(wf, 23)["inputs"][0]["link"] = None
    err = convert_error(wf)
    assert "reroute 23" in err.message and "'vae'" in err.message and set(err.node_errors) == {"8"}


def test_reroute_loop_is_an_error_not_a_hang():
    wf = load("reroutes_bypass_mute.json")
    node(wf, 20)["inputs"][0]["link"] = 15  # 21 -> 20 -> 21 ...
    wf["links"].append([40, 21, 0, 20, 0, "MODEL"])
    node(wf, 20)["inputs"][0]["link"] = 40
    err = convert_error(wf)
    assert "loop" in err.message


def test_set_and_get_nodes_are_looked_through():
    wf = load("default_txt2img.json")
    node(wf, 8)["inputs"][1]["link"] = 31
    wf["links"] = [link for link in wf["links"] if link[0] != 8]
    wf["links"] += [[30, 4, 2, 20, 0, "VAE"], [31, 21, 0, 8, 1, "VAE"]]
    wf["nodes"] += [
        {"id": 20, "type": "SetNode", "mode": 0, "inputs": [{"name": "VAE", "type": "VAE", "link": 30}],
         "outputs": [{"name": "*", "type": "*", "links": None}], "widgets_values": ["vae"]},
        {"id": 21, "type": "GetNode", "mode": 0,
         "outputs": [{"name": "VAE", "type": "VAE", "links": [31]}], "widgets_values": ["vae"]}]
    assert convert_workflow(wf, NODE_DEFS)["8"]["inputs"]["vae"] == ["4", 2]
    node(wf, 21)["widgets_values"] = ["no such name"]
    assert "no such name" in convert_error(wf).message


# -- bypassed and muted nodes -------------------------------------------------------------------


def test_bypassed_node_passes_its_input_of_the_same_type_through():
    prompt = convert_workflow(load("reroutes_bypass_mute.json"), NODE_DEFS)
    assert "30" not in prompt and "13" not in prompt
    assert prompt["14"]["inputs"]["images"] == ["8", 0]  # through the bypassed ImageScaleBy


def test_bypass_matches_by_type_not_position():
    """The bypassed LoRA's CLIP output (slot 1) gets its CLIP input, not its MODEL input."""
    wf = load("reroutes_bypass_mute.json")
    lora = node(wf, 30)
    lora["inputs"].reverse()  # clip first now: slot numbers no longer line up with outputs
    for link in wf["links"]:
        if link[3] == 30:
            link[4] = 1 - link[4]
    prompt = convert_workflow(wf, NODE_DEFS)
    assert prompt["3"]["inputs"]["model"] == ["4", 0] and prompt["6"]["inputs"]["clip"] == ["4", 1]


def _batch_workflow(mode: int) -> dict:
    wf = load("default_txt2img.json")
    # 8 (VAEDecode) -> 20.image1; 21 (a second decode) -> 20.image2; 20 -> SaveImage
    wf["nodes"] += [
        {"id": 21, "type": "VAEDecode", "mode": 0,
         "inputs": [{"name": "samples", "type": "LATENT", "link": 33},
                    {"name": "vae", "type": "VAE", "link": 34}],
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [32]}]},
        {"id": 20, "type": "ImageBatch", "mode": mode,
         "inputs": [{"name": "image1", "type": "IMAGE", "link": 31},
                    {"name": "image2", "type": "IMAGE", "link": 32}],
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [35]}]}]
    wf["links"] = [link for link in wf["links"] if link[0] != 9]
    wf["links"] += [[31, 8, 0, 20, 0, "IMAGE"], [32, 21, 0, 20, 1, "IMAGE"], [33, 5, 0, 21, 0, "LATENT"],
                    [34, 4, 2, 21, 1, "VAE"], [35, 20, 0, 9, 0, "IMAGE"]]
    node(wf, 9)["inputs"][0]["link"] = 35
    return wf


def test_bypass_prefers_the_input_at_the_same_index_then_the_first_connected():
    wf = _batch_workflow(mode=4)
    assert convert_workflow(wf, NODE_DEFS)["9"]["inputs"]["images"] == ["8", 0]
    node(wf, 20)["inputs"][0]["link"] = None  # image1 unconnected: image2 is passed through
    assert convert_workflow(wf, NODE_DEFS)["9"]["inputs"]["images"] == ["21", 0]
    wf = _batch_workflow(mode=0)
    assert convert_workflow(wf, NODE_DEFS)["9"]["inputs"]["images"] == ["20", 0]


def test_bypass_output_slot_gets_the_input_at_the_same_index():
    """A bypassed node with two IMAGE inputs and two IMAGE outputs: output 1 gets input 1."""
    wf = _batch_workflow(mode=0)
    wf["nodes"].append({"id": 22, "type": "PairOfImages (some pack)", "mode": 4,
                        "inputs": [{"name": "a", "type": "IMAGE", "link": 40},
                                   {"name": "b", "type": "IMAGE", "link": 41}],
                        "outputs": [{"name": "A", "type": "IMAGE", "links": [42]},
                                    {"name": "B", "type": "IMAGE", "links": [43]}]})
    wf["links"] = [link for link in wf["links"] if link[0] not in (31, 32)]
    wf["links"] += [[40, 8, 0, 22, 0, "IMAGE"], [41, 21, 0, 22, 1, "IMAGE"],
                    [42, 22, 0, 20, 0, "IMAGE"], [43, 22, 1, 20, 1, "IMAGE"]]
    node(wf, 20)["inputs"][0]["link"], node(wf, 20)["inputs"][1]["link"] = 42, 43
    inputs = convert_workflow(wf, NODE_DEFS)["20"]["inputs"]
    assert inputs == {"image1": ["8", 0], "image2": ["21", 0]}


def test_bypassed_node_without_an_input_to_pass_through_is_an_error():
    wf = load("default_txt2img.json")
    node(wf, 5)["mode"] = 4  # EmptyLatentImage has no LATENT input
    err = convert_error(wf)
    assert "node 5 (EmptyLatentImage)" in err.message and "bypassed" in err.message
    assert "'latent_image'" in err.message and set(err.node_errors) == {"3"}
    assert err.node_errors["3"]["class_type"] == "KSampler"


def test_muted_nodes_are_dropped():
    prompt = convert_workflow(load("reroutes_bypass_mute.json"), NODE_DEFS)
    assert not {"10", "11", "12"} & set(prompt)  # muted preview and the muted upscale branch


def test_muted_node_feeding_a_required_input_is_an_error_naming_it():
    wf = load("default_txt2img.json")
    node(wf, 8)["mode"] = 2
    err = convert_error(wf)
    assert "node 8 (VAEDecode)" in err.message and "muted" in err.message
    assert "'images'" in err.message and "node 9 (SaveImage)" in err.message
    body = err.to_json()
    assert body["error"]["type"] == "invalid_workflow"
    assert body["node_errors"]["9"]["errors"][0]["details"] == "images"
    assert body["node_errors"]["9"]["errors"][0]["extra_info"] == {"input_name": "images", "linked_node": "8"}


def test_muted_node_feeding_a_converted_widget_falls_back_to_the_widget_value():
    wf = load("primitives_widgets.json")
    node(wf, 41)["mode"] = 2
    prompt = convert_workflow(wf, NODE_DEFS)
    assert prompt["13"]["inputs"]["steps"] == 12 and "41" not in prompt


def test_muted_node_feeding_an_optional_socket_is_dropped_quietly():
    defs = {**NODE_DEFS, **HAND_DEFS}
    wf = load("default_txt2img.json")
    node(wf, 8)["mode"] = 2
    node(wf, 9)["mode"] = 2
    wf["nodes"].append({"id": 20, "type": "Thing", "mode": 0, "widgets_values": ["fast", 2.0],
                        "inputs": [{"name": "text", "type": "STRING", "link": None},
                                   {"name": "extra", "type": "IMAGE", "link": 30}]})
    wf["links"].append([30, 8, 0, 20, 1, "IMAGE"])
    assert convert_workflow(wf, defs)["20"]["inputs"] == {"mode": "fast", "amount": 2.0, "note": "n"}


def test_every_error_is_reported_at_once():
    wf = load("default_txt2img.json")
    node(wf, 4)["mode"] = 2
    err = convert_error(wf)
    assert set(err.node_errors) == {"3", "6", "7", "8"}
    assert "node 4 (CheckpointLoaderSimple)" in err.message and err.details


def test_a_workflow_with_nothing_to_run():
    wf = load("default_txt2img.json")
    for n in wf["nodes"]:
        n["mode"] = 2
    assert "no nodes" in convert_error(wf).message


# -- editor-only and unknown nodes ----------------------------------------------------------


def test_notes_and_unwired_unknown_nodes_are_ignored():
    prompt = convert_workflow(load("reroutes_bypass_mute.json"), NODE_DEFS)
    assert not {"50", "51", "52", "53"} & set(prompt)


def test_wired_unknown_node_is_an_error_naming_its_type():
    wf = load("default_txt2img.json")
    node(wf, 8)["type"] = "VAEDecodeTiled (SomePack)"
    err = convert_error(wf)
    assert "'VAEDecodeTiled (SomePack)'" in err.message and "node 8" in err.message
    assert "custom_nodes" in err.message
    assert err.node_errors["8"]["class_type"] == "VAEDecodeTiled (SomePack)"


def test_unknown_output_node_with_only_inputs_wired_is_an_error_too():
    """Ignoring it would quietly drop where the user's images go."""
    wf = load("default_txt2img.json")
    node(wf, 9)["type"] = "Image Save (WAS)"
    assert "'Image Save (WAS)'" in convert_error(wf).message


def test_unknown_node_that_is_muted_or_bypassed_is_fine():
    wf = load("reroutes_bypass_mute.json")
    node(wf, 30)["type"] = "LoraLoaderFromSomePack"  # bypassed: passes through without its def
    node(wf, 10)["type"] = "PreviewAnything"  # muted
    assert convert_workflow(wf, NODE_DEFS) == expected("reroutes_bypass_mute.prompt.json")


def test_old_group_nodes_give_a_clear_error():
    wf = load("default_txt2img.json")
    node(wf, 8)["type"] = "workflow>Decode and save"
    err = convert_error(wf)
    assert "group node" in err.message and "subgraph" in err.message


# -- subgraphs ----------------------------------------------------------------------------


def test_subgraph_nodes_get_prefixed_ids_and_links_cross_the_boundary():
    prompt = convert_workflow(load("subgraph.json"), NODE_DEFS)
    assert prompt["50:3"]["inputs"]["model"] == ["4", 0]
    assert prompt["50:3"]["inputs"]["positive"] == ["50:6", 0]
    assert prompt["50:6"]["inputs"]["clip"] == ["4", 1]
    assert prompt["8"]["inputs"]["samples"] == ["50:3", 0]
    assert "50" not in prompt


def test_unconnected_subgraph_widget_input_uses_the_instance_value_else_the_inner_one():
    wf = load("subgraph.json")
    assert convert_workflow(wf, NODE_DEFS)["50:3"]["inputs"]["seed"] == 777
    node(wf, 50)["widgets_values"] = []
    assert convert_workflow(wf, NODE_DEFS)["50:3"]["inputs"]["seed"] == 5


def test_muted_subgraph_mutes_what_is_inside():
    wf = load("subgraph.json")
    node(wf, 50)["mode"] = 2
    err = convert_error(wf)
    assert set(err.node_errors) == {"8"} and "muted" in err.message


def test_bypassed_subgraph_passes_through():
    wf = load("subgraph.json")
    node(wf, 50)["mode"] = 4
    prompt = convert_workflow(wf, NODE_DEFS)
    assert prompt["8"]["inputs"]["samples"] == ["5", 0]
    assert not any(k.startswith("50:") for k in prompt)


def test_nested_subgraphs():
    """Wrap the whole subgraph workflow's sampler block in one more subgraph level."""
    wf = load("subgraph.json")
    inner_def = wf["definitions"]["subgraphs"][0]
    outer_def = {
        "id": "outer-0001", "name": "outer",
        "inputs": [{"name": n, "type": t, "linkIds": [i + 1]} for i, (n, t) in
                   enumerate([("model", "MODEL"), ("clip", "CLIP"), ("latent", "LATENT")])],
        "outputs": [{"name": "LATENT", "type": "LATENT", "linkIds": [4]}],
        "nodes": [{"id": 9, "type": inner_def["id"], "mode": 0,
                   "inputs": [{"name": "model", "type": "MODEL", "link": 1},
                              {"name": "clip", "type": "CLIP", "link": 2},
                              {"name": "latent", "type": "LATENT", "link": 3},
                              {"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": None}],
                   "outputs": [{"name": "LATENT", "type": "LATENT", "links": [4]}],
                   "widgets_values": [31337]}],
        "links": [{"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 9, "target_slot": 0},
                  {"id": 2, "origin_id": -10, "origin_slot": 1, "target_id": 9, "target_slot": 1},
                  {"id": 3, "origin_id": -10, "origin_slot": 2, "target_id": 9, "target_slot": 2},
                  {"id": 4, "origin_id": 9, "origin_slot": 0, "target_id": -20, "target_slot": 0}],
    }
    wf["definitions"]["subgraphs"].append(outer_def)
    instance = node(wf, 50)
    instance["type"] = "outer-0001"
    instance["inputs"] = instance["inputs"][:3]
    instance["widgets_values"] = []
    prompt = convert_workflow(wf, NODE_DEFS)
    assert prompt["50:9:3"]["inputs"]["model"] == ["4", 0]
    assert prompt["50:9:3"]["inputs"]["positive"] == ["50:9:6", 0]
    assert prompt["50:9:3"]["inputs"]["seed"] == 31337
    assert prompt["8"]["inputs"]["samples"] == ["50:9:3", 0]
    validate_prompt(prompt, make_registry())


def test_a_subgraph_that_contains_itself_is_an_error():
    wf = load("subgraph.json")
    sub = wf["definitions"]["subgraphs"][0]
    sub["nodes"].append({"id": 99, "type": sub["id"], "mode": 0})
    assert "nested" in convert_error(wf).message + convert_error(wf).details


# -- malformed input ----------------------------------------------------------------------


@pytest.mark.parametrize("wf, words", [
    ([], "JSON object"),
    ("nodes", "JSON object"),
    ({"links": []}, "'nodes'"),
    ({"nodes": {}}, "'nodes'"),
    ({"nodes": [1]}, "not an object"),
    ({"nodes": [{"type": "KSampler"}]}, "'id'"),
    ({"nodes": [{"id": 1}]}, "'type'"),
    ({"nodes": [{"id": True, "type": "X"}]}, "'id'"),
    ({"nodes": [{"id": 1, "type": "VAEDecode"}, {"id": 1, "type": "VAEDecode"}]}, "two nodes"),
    ({"nodes": [], "links": {}}, "'links'"),
    ({"nodes": [], "links": ["x"]}, "link"),
    ({"nodes": [], "links": [[1, 2, "0", 3, 0, "X"]]}, "origin_slot"),
    ({"nodes": [], "links": [{"id": 1, "origin_id": 2}]}, "link 1"),
    ({"nodes": []}, "no nodes"),
])
def test_malformed_workflows_give_clear_errors(wf, words):
    err = convert_error(wf)
    assert words in err.message + " " + err.details


def test_an_api_prompt_is_recognised():
    prompt = expected("default_txt2img.prompt.json")
    assert looks_like_api_prompt(prompt) and not is_ui_workflow(prompt)
    assert is_ui_workflow(load("default_txt2img.json"))
    err = convert_error(prompt)
    assert "API-format prompt" in err.message and "/prompt" in err.details


def test_link_missing_from_the_links_table():
    wf = load("default_txt2img.json")
    wf["links"] = [link for link in wf["links"] if link[0] != 8]
    err = convert_error(wf)
    assert "link 8" in err.message and "'vae'" in err.message


def test_link_from_a_node_that_is_not_there():
    wf = load("default_txt2img.json")
    wf["nodes"] = [n for n in wf["nodes"] if n["id"] != 5]
    err = convert_error(wf)
    assert "node 5" in err.message and "'latent_image'" in err.message


def _garbage():
    leaf = st.one_of(st.none(), st.booleans(), st.integers(-30, 30), st.text(max_size=5),
                     st.sampled_from(["KSampler", "Reroute", "PrimitiveNode", "SetNode", "GetNode",
                                      "VAEDecode", "IMAGE", "seed", "randomize"]))
    return st.recursive(leaf, lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(
            st.sampled_from(["id", "type", "mode", "inputs", "outputs", "links", "link", "widget",
                             "name", "widgets_values", "nodes", "definitions", "subgraphs",
                             "origin_id", "target_id", "origin_slot", "target_slot", "title"]),
            inner, max_size=6)), max_leaves=30)


GARBAGE = _garbage()  # built once: building the strategy per draw is slow


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_garbage_never_crashes_the_converter(data):
    """Whatever a client sends, the answer is a prompt or a PromptError, never another exception."""
    wf = load(data.draw(st.sampled_from(["default_txt2img.json", "primitives_widgets.json",
                                         "subgraph.json", "reroutes_bypass_mute.json"])))
    rnd = random.Random(data.draw(st.integers(0, 2**32)))
    for _ in range(data.draw(st.integers(1, 4))):
        target = rnd.choice(wf["nodes"] + wf["definitions"]["subgraphs"][0]["nodes"]
                            if "definitions" in wf else wf["nodes"])
        key = rnd.choice(["id", "type", "mode", "inputs", "outputs", "widgets_values", "title"])
        target[key] = data.draw(GARBAGE)
        if rnd.random() < 0.3 and wf["links"]:
            wf["links"][rnd.randrange(len(wf["links"]))] = data.draw(GARBAGE)
    try:
        prompt = convert_workflow(wf, NODE_DEFS)
    except PromptError:
        return
    assert isinstance(prompt, dict)
    json.dumps(prompt)


def test_an_absurdly_long_reroute_chain_is_an_error_not_a_crash():
    wf = load("default_txt2img.json")
    count = 5000
    for i in range(count):
        wf["nodes"].append({"id": 100 + i, "type": "Reroute", "mode": 0,
                            "inputs": [{"name": "", "type": "*", "link": 1000 + i}],
                            "outputs": [{"name": "", "type": "VAE", "links": [1001 + i]}]})
        wf["links"].append([1000 + i, 4 if i == 0 else 99 + i, 2 if i == 0 else 0, 100 + i, 0, "VAE"])
    wf["links"] = [link for link in wf["links"] if link[0] != 8]
    wf["links"].append([1000 + count, 99 + count, 0, 8, 1, "VAE"])
    node(wf, 8)["inputs"][1]["link"] = 1000 + count
    assert "too deep" in convert_error(wf).message
