from engine.validation import validate_prompt


def error_types(result, node_id):
    return [error["type"] for error in result.node_errors[node_id]["errors"]]


def test_valid_prompt_passes_and_coerces_values(registry):
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 5.0}},
              "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
    result = validate_prompt(prompt, registry)
    assert result.ok, result.to_response()
    assert result.outputs == ["2"]
    assert result.prompt["1"]["inputs"]["value"] == 5 and isinstance(result.prompt["1"]["inputs"]["value"], int)


def test_unknown_class_type_is_reported_with_missing_node_type(registry):
    prompt = {"1": {"class_type": "NoSuchNode", "inputs": {}},
              "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
    result = validate_prompt(prompt, registry)
    assert not result.ok
    assert result.error["type"] == "missing_node_type"
    assert "NoSuchNode" in result.error["message"]
    assert error_types(result, "1") == ["missing_node_type"]


def test_missing_required_input_names_the_input(registry):
    prompt = {"1": {"class_type": "Add", "inputs": {"a": 1}},
              "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
    result = validate_prompt(prompt, registry)
    assert result.error["type"] == "prompt_outputs_failed_validation"
    [error] = result.node_errors["1"]["errors"]
    assert error["type"] == "required_input_missing"
    assert error["extra_info"]["input_name"] == "b"
    assert result.node_errors["1"]["class_type"] == "Add"
    assert result.node_errors["1"]["dependent_outputs"] == ["2"]


def test_links_to_missing_nodes_and_bad_output_indexes(registry):
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 1}},
              "2": {"class_type": "Add", "inputs": {"a": ["99", 0], "b": ["1", 3]}},
              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    result = validate_prompt(prompt, registry)
    errors = result.node_errors["2"]["errors"]
    assert [e["type"] for e in errors] == ["bad_linked_input", "bad_linked_input"]
    assert {e["extra_info"]["input_name"] for e in errors} == {"a", "b"}


def test_type_mismatch_between_linked_nodes(registry):
    prompt = {"1": {"class_type": "Text", "inputs": {"text": "x", "mode": "keep"}},
              "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}},
              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    result = validate_prompt(prompt, registry)
    [error] = result.node_errors["2"]["errors"]
    assert error["type"] == "return_type_mismatch"
    assert error["extra_info"]["received_type"] == "STRING"
    assert "mismatch input_type(INT)" in error["details"]


def test_widget_values_of_wrong_type_out_of_range_or_not_in_choices(registry):
    prompt = {"1": {"class_type": "Const", "inputs": {"value": "five"}},
              "2": {"class_type": "Const", "inputs": {"value": 5000}},
              "3": {"class_type": "Const", "inputs": {"value": -5000}},
              "4": {"class_type": "Text", "inputs": {"text": "x", "mode": "sideways", "scale": 2.5,
                                                     "enabled": "maybe"}},
              "5": {"class_type": "Const", "inputs": {"value": 2.5}}}
    for node_id in ("1", "2", "3", "4", "5"):
        prompt[f"out{node_id}"] = {"class_type": "Output", "inputs": {"value": [node_id, 0]}}
    result = validate_prompt(prompt, registry)
    assert error_types(result, "1") == ["invalid_input_type"]
    assert error_types(result, "2") == ["value_bigger_than_max"]
    assert error_types(result, "3") == ["value_smaller_than_min"]
    assert sorted(error_types(result, "4")) == ["invalid_input_type", "value_bigger_than_max", "value_not_in_list"]
    assert error_types(result, "5") == ["invalid_input_type"]
    assert result.error["type"] == "prompt_outputs_failed_validation"


def test_every_problem_is_collected_not_only_the_first(registry):
    prompt = {"1": {"class_type": "Add", "inputs": {}},
              "2": {"class_type": "Const", "inputs": {"value": "x"}},
              "3": {"class_type": "Output", "inputs": {"value": ["1", 0]}},
              "4": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    result = validate_prompt(prompt, registry)
    assert sorted(result.node_errors) == ["1", "2"]
    assert len(result.node_errors["1"]["errors"]) == 2


def test_validate_inputs_failure_and_skip_of_builtin_checks(registry):
    prompt = {"1": {"class_type": "Positive", "inputs": {"value": -3, "label": "x"}},
              "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
    result = validate_prompt(prompt, registry)
    [error] = result.node_errors["1"]["errors"]
    assert error["type"] == "custom_validation_failed"
    assert "value must be positive, got -3" in error["details"]
    prompt["1"]["inputs"]["value"] = 4
    assert validate_prompt(prompt, registry).ok


def test_cycles_are_detected(registry):
    prompt = {"1": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": 1}},
              "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}},
              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    result = validate_prompt(prompt, registry)
    assert not result.ok
    assert error_types(result, "1") == ["dependency_cycle"]
    assert error_types(result, "2") == ["dependency_cycle"]


def test_prompt_without_output_node(registry):
    result = validate_prompt({"1": {"class_type": "Const", "inputs": {"value": 1}}}, registry)
    assert result.error["type"] == "prompt_no_outputs"
    assert result.node_errors == {}


def test_invalid_outputs_are_reported_while_valid_ones_still_run(registry):
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 1}},
              "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "Add", "inputs": {"a": ["1", 0]}},
              "4": {"class_type": "Output", "inputs": {"value": ["3", 0]}}}
    result = validate_prompt(prompt, registry)
    assert result.ok
    assert result.outputs == ["2"]
    assert error_types(result, "3") == ["required_input_missing"]
    assert result.node_errors["3"]["dependent_outputs"] == ["4"]


def test_wildcard_and_union_types(registry):
    prompt = {"1": {"class_type": "FloatConst", "inputs": {"value": 0.5}},
              "2": {"class_type": "Hidden", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "Const", "inputs": {"value": 1}},
              "4": {"class_type": "Hidden", "inputs": {"value": ["3", 0]}},
              "5": {"class_type": "Text", "inputs": {"text": "a", "mode": "keep"}},
              "6": {"class_type": "Hidden", "inputs": {"value": ["5", 0]}},
              "7": {"class_type": "Output", "inputs": {"value": ["5", 0]}}}
    result = validate_prompt(prompt, registry)
    assert sorted(result.outputs) == ["2", "4", "7"]
    assert error_types(result, "6") == ["return_type_mismatch"]


def test_partial_execution_targets_limit_validation(registry):
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 1}},
              "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "Add", "inputs": {}},
              "4": {"class_type": "Output", "inputs": {"value": ["3", 0]}}}
    result = validate_prompt(prompt, registry, partial_execution_targets=["2"])
    assert result.ok and result.outputs == ["2"] and result.node_errors == {}
    bad = validate_prompt(prompt, registry, partial_execution_targets=["42"])
    assert bad.error["type"] == "invalid_prompt"


def test_malformed_prompt(registry):
    assert validate_prompt([], registry).error["type"] == "invalid_prompt"
    assert validate_prompt({"1": {"inputs": {}}}, registry).error["type"] == "invalid_prompt"


def test_a_node_whose_input_types_raise_is_a_node_error(registry):
    class Broken:
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls):
            raise AttributeError("module 'nodes' has no attribute 'X'")

    registry.register("Broken", Broken)
    prompt = {"1": {"class_type": "Broken", "inputs": {}},
              "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
    result = validate_prompt(prompt, registry)
    assert error_types(result, "1") == ["exception_during_validation"]
    assert "has no attribute 'X'" in result.node_errors["1"]["errors"][0]["details"]


def test_multiple_of_is_checked_for_int_widgets_that_ask_for_it(registry):
    class Sized:
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"width": ("INT", {"default": 512, "min": 16, "max": 16384, "step": 8,
                                                   "multiple_of": 8}),
                                 "count": ("INT", {"default": 1, "step": 8})}}

    registry.register("Sized", Sized)
    prompt = {"1": {"class_type": "Sized", "inputs": {"width": 513, "count": 3}},
              "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
    [error] = validate_prompt(prompt, registry).node_errors["1"]["errors"]
    assert error["type"] == "value_not_multiple"
    assert error["message"] == "Value 513 is not a multiple of 8"
    assert error["extra_info"] == {"input_name": "width", "received_value": 513,
                                   "input_config": ["INT", Sized.INPUT_TYPES()["required"]["width"][1]]}
    prompt["1"]["inputs"]["width"] = 520.0
    assert validate_prompt(prompt, registry).ok
    prompt["1"]["inputs"]["width"] = 8
    assert error_types(validate_prompt(prompt, registry), "1") == ["value_smaller_than_min"]
