"""The contract of transformers' common model tests (tests/test_modeling_common.py of transformers 5.24, which cannot
be imported out of tree), applied to SSLAMModel and SSLAMForAudioClassification with a tiny random config: attention
masks of both conventions and any padding pattern in every attention implementation, eager vs SDPA in fp32 / bf16 /
fp16, output_hidden_states / output_attentions, save / load, meta-device initialisation, batching, training and
gradient checkpointing, torch.export and torch.compile with padded masks, and input errors.
"""

import copy
import inspect
import re

import numpy as np
import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from torch.export import Dim
from transformers import AttentionInterface, PreTrainedModel, set_seed
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.modeling_outputs import SequenceClassifierOutput

import sslam.modeling_sslam  # noqa: F401  (registers the Auto classes)
from sslam.modeling_sslam.configuration_sslam import SSLAMConfig
from sslam.modeling_sslam.modeling_sslam import SSLAMForAudioClassification, SSLAMModel, token_attention_mask


MODEL_CLASSES = [SSLAMModel, SSLAMForAudioClassification]
BATCH, FRAMES = 7, 64  # 4 patch rows x 8 = 32 patch tokens, 33 tokens with CLS
# transformers' eager-vs-SDPA tolerances on CPU: (atol, rtol); bf16 also allows 3e-2 x the output magnitude.
TOLERANCES = {torch.float32: (1e-6, 1e-4), torch.float16: (5e-3, 5e-3), torch.bfloat16: (1e-2, 1e-2)}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def tiny_config(**overrides) -> SSLAMConfig:
    fields = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, max_time_patches=8,
        num_labels=3,
    )  # fmt: skip
    return SSLAMConfig(**{**fields, **overrides})


def num_tokens(frames: int = FRAMES, config: SSLAMConfig | None = None) -> int:
    config = config or tiny_config()
    return 1 + (frames // config.patch_size) * config.num_freq_patches


def inputs(batch: int = BATCH, frames: int = FRAMES, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, frames, 128, generator=torch.Generator().manual_seed(seed))


def build(model_class, seed: int = 0, **overrides) -> PreTrainedModel:
    set_seed(seed)
    return model_class(tiny_config(**overrides)).eval()


def padded_mask(kind: str, side: str, batch: int = BATCH, frames: int = FRAMES) -> torch.Tensor:
    """An int64 mask of all ones except in the last row: transformers' token masks (2 tokens padded on the left /
    right), or frame masks padding whole patch rows (and part of one: a row with any real frame is real)."""
    length = frames if kind == "frame" else num_tokens(frames)
    mask = torch.ones(batch, length, dtype=torch.int64)
    padded = {
        ("token", "left"): slice(0, 2), ("token", "right"): slice(length - 2, length),
        ("token", "interior"): slice(9, 17), ("frame", "left"): slice(0, 16),
        ("frame", "right"): slice(length - 24, length), ("frame", "interior"): slice(16, 32),
    }[kind, side]  # fmt: skip
    mask[-1, padded] = 0
    return mask


def main_output(model, outputs) -> torch.Tensor:
    return outputs.logits if isinstance(outputs, SequenceClassifierOutput) else outputs.hidden_states[-1]


def assert_close_as_transformers(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype):
    atol, rtol = TOLERANCES[dtype]
    if dtype == torch.bfloat16:
        atol = max(atol, 3e-2 * max(actual.abs().max().item(), expected.abs().max().item()))
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol)


# --- attention masks and implementations ------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("dtype", list(DTYPES), ids=str)
@pytest.mark.parametrize(
    "kind, side",
    [(None, None)] + [(kind, side) for kind in ("token", "frame") for side in ("left", "right", "interior")],
    ids=lambda value: str(value),
)
@pytest.mark.parametrize("output_attentions", [False, True], ids=["", "output_attentions"])
def test_eager_matches_sdpa(model_class, dtype, kind, side, output_attentions, tmp_path):
    """transformers' `test_eager_matches_sdpa_inference`: the same weights loaded in `dtype` with each implementation
    give the same outputs (and, with `output_attentions`, the same weights) for every row of a batch of 7."""
    build(model_class, layer_norm_eps=1.0).save_pretrained(tmp_path)
    models = {
        name: model_class.from_pretrained(tmp_path, dtype=DTYPES[dtype], attn_implementation=name).eval()
        for name in ("eager", "sdpa")
    }
    mask = None if kind is None else padded_mask(kind, side)
    kwargs = dict(attention_mask=mask, output_hidden_states=True, output_attentions=output_attentions)
    with torch.no_grad():
        outputs = {name: model(inputs().to(DTYPES[dtype]), **kwargs) for name, model in models.items()}
    assert_close_as_transformers(
        main_output(models["sdpa"], outputs["sdpa"]), main_output(models["eager"], outputs["eager"]), DTYPES[dtype]
    )
    if output_attentions:
        assert len(outputs["sdpa"].attentions) == len(outputs["eager"].attentions) == 2
        for sdpa, eager in zip(outputs["sdpa"].attentions, outputs["eager"].attentions):
            assert sdpa.shape == (BATCH, 4, num_tokens(), num_tokens())
            assert_close_as_transformers(sdpa, eager, DTYPES[dtype])


def perturb_patches(x: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """`x` `(T, 128)` with the 16 x 16 pixels of the time-major patch tokens `patches` (bool `(N,)`) set to 100."""
    x = x.clone()
    for index in patches.nonzero().flatten().tolist():
        row, column = divmod(index, 8)
        x[16 * row : 16 * row + 16, 16 * column : 16 * column + 16] = 100.0
    return x


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("kind", ["token", "frame"])
@pytest.mark.parametrize("side", ["left", "right", "interior"])
def test_padding_is_never_attended(implementation, kind, side):
    """Whatever the padded patch tokens contain changes nothing in the outputs of the real ones."""
    model = build(SSLAMModel, attn_implementation=implementation)
    mask = padded_mask(kind, side)
    real = token_attention_mask(mask, BATCH, num_tokens() - 1, FRAMES, model.config)[-1]
    x = inputs()
    noisy = x.clone()
    noisy[-1] = perturb_patches(x[-1], ~real[1:])
    with torch.no_grad():
        clean = model(x, attention_mask=mask).last_hidden_state
        perturbed = model(noisy, attention_mask=mask).last_hidden_state
        unmasked = model(noisy).last_hidden_state
    torch.testing.assert_close(perturbed[-1, real], clean[-1, real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(perturbed[:-1], clean[:-1], atol=1e-5, rtol=1e-5)
    assert (unmasked[-1, real] - clean[-1, real]).abs().max() > 1e-3  # without the mask the padding is seen


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_token_and_frame_masks_agree(implementation):
    """A frame mask equals the token mask it implies; padded keys get zero attention weight."""
    model = build(SSLAMModel, attn_implementation=implementation)
    frames = padded_mask("frame", "right")
    tokens = token_attention_mask(frames, BATCH, num_tokens() - 1, FRAMES, model.config)
    assert tokens.shape == (BATCH, num_tokens()) and tokens[:, 0].all()
    assert tokens[-1].sum() == 1 + 2 * 8 + 8  # CLS, two real rows and the partly real third row
    with torch.no_grad():
        by_frames = model(inputs(), attention_mask=frames, output_attentions=True)
        by_tokens = model(inputs(), attention_mask=tokens.long(), output_attentions=True)
    torch.testing.assert_close(by_frames.last_hidden_state, by_tokens.last_hidden_state, rtol=0, atol=0)
    for weights in by_frames.attentions:
        assert torch.all(weights[-1][..., ~tokens[-1]] == 0)
        torch.testing.assert_close(weights.sum(dim=-1), torch.ones(weights.shape[:-1]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("frames", [FRAMES - 1, FRAMES - 8, FRAMES - 15, FRAMES + 16])
def test_frame_mask_of_another_length_is_refused(frames):
    model = build(SSLAMModel)
    expected = rf"expected \({BATCH}, {FRAMES}\) with one entry per frame or \({BATCH}, {num_tokens()}\) with one"
    with pytest.raises(ValueError, match=rf"attention_mask has shape \({BATCH}, {frames}\); {expected}"):
        model(inputs(), attention_mask=torch.ones(BATCH, frames))


@pytest.mark.parametrize(
    "shape", [(1, FRAMES), (1, num_tokens()), (BATCH, num_tokens() - 1), (BATCH, num_tokens() + 1), (BATCH, 1, FRAMES)]
)
def test_mask_of_another_shape_is_refused(shape):
    """Batch 1 for a batch of 7 is not broadcast; token masks of N or N + 2 entries and 3-D masks are refused."""
    with pytest.raises(ValueError, match=re.escape(f"attention_mask has shape {shape}")):
        build(SSLAMModel)(inputs(), attention_mask=torch.ones(shape))
    with pytest.raises(ValueError, match="expected"):
        build(SSLAMForAudioClassification)(inputs(), attention_mask=torch.ones(shape))


def test_patch_embeddings_take_token_masks_only():
    model = build(SSLAMModel)
    patches = model.embed_patches(inputs())
    mask = padded_mask("token", "right")
    with torch.no_grad():
        torch.testing.assert_close(
            model(patch_embeddings=patches, attention_mask=mask).last_hidden_state,
            model(inputs(), attention_mask=mask).last_hidden_state,
            rtol=0, atol=0,
        )  # fmt: skip
    with pytest.raises(ValueError, match=rf"expected \({BATCH}, {num_tokens()}\) with one entry per token"):
        model(patch_embeddings=patches, attention_mask=torch.ones(BATCH, FRAMES))


# --- outputs ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_hidden_states_and_attentions_outputs(model_class, implementation):
    """transformers' `test_hidden_states_output` / `test_attention_outputs`: num_hidden_layers + 1 states of
    (B, S, D), one (B, H, S, S) attention map per block, also when asked for through the config."""
    model = build(model_class, attn_implementation=implementation)
    with torch.no_grad():
        outputs = model(inputs(), output_hidden_states=True, output_attentions=True)
    assert len(outputs.hidden_states) == 3 and len(outputs.attentions) == 2
    assert all(state.shape == (BATCH, num_tokens(), 32) for state in outputs.hidden_states)
    assert all(weights.shape == (BATCH, 4, num_tokens(), num_tokens()) for weights in outputs.attentions)
    with torch.no_grad():
        plain = model(inputs())
    assert plain.hidden_states is None and plain.attentions is None
    model.config.output_hidden_states = True
    with torch.no_grad():
        assert len(model(inputs()).hidden_states) == 3


def test_output_attentions_in_the_config_needs_an_implementation_with_weights():
    """transformers refuses `output_attentions=True` in the config of an SDPA model; per call it works (above)."""
    with pytest.raises((ValueError, StrictDataclassError), match="output_attentions"):
        tiny_config(output_attentions=True, attn_implementation="sdpa")
    model = build(SSLAMModel, output_attentions=True, attn_implementation="eager")
    with torch.no_grad():
        assert len(model(inputs()).attentions) == 2


def test_implementation_without_weights_fails_clearly():
    """An attention implementation that cannot return weights raises with output_attentions=True, never (None, ...)."""
    AttentionInterface.register("sdpa_no_weights_test", sdpa_attention_forward)
    model = build(SSLAMModel, attn_implementation="sdpa_no_weights_test")
    with torch.no_grad():
        reference = build(SSLAMModel, attn_implementation="eager")(inputs()).last_hidden_state
        torch.testing.assert_close(model(inputs()).last_hidden_state, reference, atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="'sdpa_no_weights_test' does not return attention weights"):
            model(inputs(), output_attentions=True)


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=lambda cls: cls.__name__)
def test_tuple_and_dict_outputs_are_equivalent(model_class):
    model = build(model_class)
    mask = padded_mask("frame", "right")
    with torch.no_grad():
        as_dict = model(inputs(), attention_mask=mask, output_hidden_states=True, output_attentions=True)
        as_tuple = model(
            inputs(), attention_mask=mask, output_hidden_states=True, output_attentions=True, return_dict=False
        )
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(as_dict.to_tuple())
    for left, right in zip(as_tuple, as_dict.to_tuple()):
        for a, b in zip(left if isinstance(left, tuple) else (left,), right if isinstance(right, tuple) else (right,)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=lambda cls: cls.__name__)
def test_batching_equivalence(model_class):
    """transformers' `test_batching_equivalence`: row 0 of a batch equals the row alone (1e-5)."""
    model = build(model_class, layer_norm_eps=1.0)
    with torch.no_grad():
        batched = model(inputs(), output_hidden_states=True)
        single = model(inputs()[:1], output_hidden_states=True)
    for key in ("logits", "last_hidden_state", "pooler_output"):
        if key in batched:
            torch.testing.assert_close(batched[key][:1], single[key], atol=1e-5, rtol=1e-5)
    for batched_state, single_state in zip(batched.hidden_states, single.hidden_states):
        torch.testing.assert_close(batched_state[:1], single_state, atol=1e-5, rtol=1e-5)


def test_determinism_and_main_input_name():
    model = build(SSLAMForAudioClassification)
    with torch.no_grad():
        torch.testing.assert_close(model(inputs()).logits, model(inputs()).logits, rtol=0, atol=0)
    assert model.main_input_name == "input_values"
    assert list(inspect.signature(model.forward).parameters)[0] == "input_values"


def test_outputs_are_captured_by_the_base_model_only():
    """transformers' `test_capture_outputs_decorator`: `capture_outputs` runs once per call (in the base model)."""
    from transformers.utils.output_capturing import CompileableContextVar

    entered = []
    original = CompileableContextVar.set

    def counting_set(self, value):
        entered.append(set(value))
        return original(self, value)

    model = build(SSLAMForAudioClassification)
    CompileableContextVar.set = counting_set
    try:
        with torch.no_grad():
            outputs = model(inputs(), output_hidden_states=True, output_attentions=True)
    finally:
        CompileableContextVar.set = original
    assert entered == [{"hidden_states", "attentions"}]
    assert len(outputs.hidden_states) == 3 and len(outputs.attentions) == 2


# --- saving, loading, initialisation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=lambda cls: cls.__name__)
def test_save_load(model_class, tmp_path):
    """transformers' `test_save_load` (twice) and `test_from_pretrained_no_checkpoint`."""
    model = build(model_class)
    with torch.no_grad():
        expected = model(inputs())[0]
    model.save_pretrained(tmp_path / "first")
    first = model_class.from_pretrained(tmp_path / "first").eval()
    first.save_pretrained(tmp_path / "second")
    second = model_class.from_pretrained(tmp_path / "second").eval()
    state = model_class.from_pretrained(None, config=model.config, state_dict=model.state_dict()).eval()
    with torch.no_grad():
        for reloaded in (first, second, state):
            torch.testing.assert_close(reloaded(inputs())[0], expected, rtol=0, atol=0)


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=lambda cls: cls.__name__)
def test_can_init_all_missing_weights(model_class):
    """transformers' `test_can_init_all_missing_weights`: `_init_weights` rebuilds every tensor, bit for bit."""
    original = PreTrainedModel._initialize_weights

    def seeded(*args, **kwargs):
        set_seed(42)
        original(*args, **kwargs)

    PreTrainedModel._initialize_weights = seeded
    try:
        from_init = model_class(tiny_config())
        from_nothing = model_class.from_pretrained(None, config=tiny_config(), state_dict={})
    finally:
        PreTrainedModel._initialize_weights = original
    expected, actual = from_init.state_dict(), from_nothing.state_dict()
    assert sorted(actual) == sorted(expected)
    assert not [key for key, tensor in actual.items() if tensor.device.type == "meta"]
    assert [key for key in expected if not torch.equal(expected[key], actual[key])] == []


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=lambda cls: cls.__name__)
def test_init_weights_on_meta_recreates_buffers_and_runs(model_class):
    """`test_init_weights_can_init_buffers` + `test_all_tensors_are_parameter_or_buffer`: a model built on the meta
    device and initialised with `init_weights()` has the same buffers (the sin-cos table) and runs."""
    with torch.device("meta"):
        model = model_class(tiny_config())
    model.to_empty(device="cpu")
    model.init_weights()
    expected = dict(build(model_class).named_buffers())
    assert sorted(dict(model.named_buffers())) == sorted(expected)
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, expected[name]), name
    with torch.no_grad():
        assert torch.isfinite(model.eval()(inputs())[0]).all()


def test_head_reports_missing_keys_and_loads_base_weights(tmp_path):
    """`test_correct_missing_keys` + `test_base_model_prefix_loads_base_weights`."""
    encoder = build(SSLAMModel)
    encoder.save_pretrained(tmp_path)
    classifier, info = SSLAMForAudioClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert {"classifier.weight", "classifier.bias", "fc_norm.weight", "fc_norm.bias"} <= set(info["missing_keys"])
    assert not any(key.startswith(classifier.base_model_prefix) for key in info["missing_keys"])
    assert all(torch.equal(tensor, encoder.state_dict()[key]) for key, tensor in classifier.sslam.state_dict().items())


def test_mismatched_head_loads_with_ignore_mismatched_sizes(tmp_path):
    build(SSLAMForAudioClassification).save_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        SSLAMForAudioClassification.from_pretrained(tmp_path, num_labels=5)
    model = SSLAMForAudioClassification.from_pretrained(tmp_path, num_labels=5, ignore_mismatched_sizes=True)
    assert model(inputs()).logits.shape == (BATCH, 5)


def test_attention_implementation_can_be_set_dynamically():
    model = build(SSLAMModel)
    assert model.config._attn_implementation == "sdpa"  # what from_pretrained / __init__ gives
    with torch.no_grad():
        sdpa = model(inputs()).last_hidden_state
        model.set_attn_implementation("eager")
        assert model.config._attn_implementation == "eager"
        torch.testing.assert_close(model(inputs()).last_hidden_state, sdpa, atol=1e-5, rtol=1e-5)


def test_tiny_model_is_small():
    """transformers' `test_model_is_small` / `test_num_layers_is_small` for the config these tests use."""
    model = build(SSLAMForAudioClassification)
    assert model.config.num_hidden_layers <= 2
    assert sum(parameter.numel() for parameter in model.parameters()) < 1_000_000


# --- training ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "problem_type, labels",
    [
        ("single_label_classification", torch.tensor([0, 2, 1, 0, 1, 2, 0])),
        ("multi_label_classification", (torch.arange(BATCH * 3).reshape(BATCH, 3) % 2).float()),
        ("regression", torch.linspace(-1, 1, BATCH)),
    ],
)
def test_training_gives_every_parameter_a_gradient(problem_type, labels):
    """`test_training` + `test_problem_types`."""
    model = build(SSLAMForAudioClassification, problem_type=problem_type, num_labels=1 if problem_type == "regression"
                  else 3).train()  # fmt: skip
    loss = model(inputs(), labels=labels).loss
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    missing = [name for name, parameter in model.named_parameters() if parameter.grad is None]
    assert missing == []


@pytest.mark.parametrize("kwargs", [None, {"use_reentrant": False}, {"use_reentrant": True}], ids=str)
def test_gradient_checkpointing_gives_the_same_gradients(kwargs):
    """`test_training_gradient_checkpointing(_use_reentrant_*)` and `test_gradient_checkpointing_enable_disable`
    (through `activation_checkpointing_*`, the non-deprecated names in transformers 5.24)."""
    model = build(SSLAMForAudioClassification).train()
    labels = torch.tensor([0, 2, 1, 0, 1, 2, 0])
    mask = padded_mask("frame", "interior")

    def gradients():
        model.zero_grad(set_to_none=True)
        model(inputs(), attention_mask=mask, labels=labels).loss.backward()
        return {name: parameter.grad.clone() for name, parameter in model.named_parameters()}

    expected = gradients()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    assert model.is_activation_checkpointing
    assert all(layer.gradient_checkpointing for layer in model.sslam.encoder.layer)
    calls = []
    hook = model.sslam.encoder.layer[0].mlp.register_forward_hook(lambda *args: calls.append(1))
    checkpointed = gradients()
    hook.remove()
    assert len(calls) == 2  # the block runs again in the backward pass
    model.activation_checkpointing_disable()
    assert not model.is_activation_checkpointing
    assert sorted(checkpointed) == sorted(expected)
    for name, gradient in expected.items():
        torch.testing.assert_close(checkpointed[name], gradient, atol=1e-6, rtol=1e-5, msg=name)


def test_hidden_states_and_attentions_retain_gradients():
    """transformers' `test_retain_grad_hidden_states_attentions`."""
    model = build(SSLAMModel, attn_implementation="eager")
    outputs = model(inputs(), output_hidden_states=True, output_attentions=True)
    hidden, attentions = outputs.hidden_states[0], outputs.attentions[0]
    hidden.retain_grad()
    attentions.retain_grad()
    outputs[0].flatten()[0].backward()
    assert hidden.grad is not None and attentions.grad is not None


def test_enable_input_require_grads():
    model = build(SSLAMForAudioClassification)
    model.enable_input_require_grads()
    assert model.get_input_embeddings() is model.sslam.embeddings.patch_embeddings.projection
    model.activation_checkpointing_enable()
    model.train()(inputs(), labels=torch.zeros(BATCH, dtype=torch.long)).loss.backward()
    model.disable_input_require_grads()


# --- export and compile -----------------------------------------------------------------------------------------------


def exported_program(model, kind: str):
    """`torch.export` with a dynamic batch and time axis (any multiple of 16 frames up to the position table)."""
    import torch.fx.experimental._config as fx_config

    batch, rows = Dim("batch", min=1, max=16), Dim("rows", min=1, max=model.config.max_time_patches)
    mask_length = 16 * rows if kind == "frame" else 8 * rows + 1
    shapes = {"input_values": {0: batch, 1: 16 * rows}, "attention_mask": {0: batch, 1: mask_length}}
    mask = torch.ones(2, 32 if kind == "frame" else num_tokens(32), dtype=torch.int64)
    with fx_config.patch(backed_size_oblivious=True):  # keeps one patch row (16 frames) legal
        return torch.export.export(model, (inputs(2, 32),), {"attention_mask": mask}, dynamic_shapes=shapes)


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("kind", ["frame", "token"])
def test_torch_export_with_dynamic_time_and_padded_masks(model_class, kind):
    model = build(model_class, pooling="mean")
    program = exported_program(model, kind)
    for batch, frames, side in ((1, 16, None), (3, 64, "interior"), (5, 128, "left")):
        mask = torch.ones(batch, frames if kind == "frame" else num_tokens(frames), dtype=torch.int64)
        if side:
            mask = padded_mask(kind, side, batch, frames)
        with torch.no_grad():
            expected = model(inputs(batch, frames), attention_mask=mask)[0]
            actual = program.module()(inputs(batch, frames), attention_mask=mask)[0]
        torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=lambda cls: cls.__name__)
def test_torch_compile_fullgraph_with_padded_mask(model_class):
    torch._dynamo.reset()
    model = build(model_class, pooling="mean")
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="eager")
    with torch.no_grad():
        for frames in (64, 96):
            mask = padded_mask("frame", "interior", BATCH, frames)
            torch.testing.assert_close(
                compiled(inputs(frames=frames), attention_mask=mask)[0],
                model(inputs(frames=frames), attention_mask=mask)[0],
                atol=1e-5, rtol=1e-5,
            )  # fmt: skip


# --- input errors -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, error, message",
    [
        (torch.zeros(0, FRAMES, 128), ValueError, r"input_values is an empty batch \(shape \(0, 64, 128\)\)"),
        (np.zeros((1, FRAMES, 128), np.float32), TypeError, "input_values must be a torch.Tensor, got ndarray"),
        (torch.zeros(1, 2, FRAMES, 128), ValueError, "1 and 128"),
        (torch.zeros(1, FRAMES, 64), ValueError, "64 mel bins"),
        (torch.zeros(1, FRAMES + 3, 128), ValueError, r"frames \(67\) must be a positive multiple of patch_size"),
        (torch.zeros(1, 16 * 9, 128), ValueError, "exceed the position table"),
    ],
    ids=["empty-batch", "numpy", "channels", "mel-bins", "frames", "too-long"],
)
@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=lambda cls: cls.__name__)
def test_bad_input_is_explained(model_class, value, error, message):
    with pytest.raises(error, match=message):
        build(model_class)(value)


def test_exactly_one_input_is_required():
    model = build(SSLAMModel)
    with pytest.raises(ValueError, match="exactly one of input_values and patch_embeddings"):
        model()
    with pytest.raises(ValueError, match="exactly one of input_values and patch_embeddings"):
        model(inputs(), patch_embeddings=model.embed_patches(inputs()))


def test_bf16_autocast_keeps_the_residual_stream_in_float32():
    """As the original (fp32 positions added to the bf16 patch conv output promote the stream): under CPU bf16
    autocast the embeddings and every hidden state are fp32; a model loaded in bf16 stays bf16."""
    model = build(SSLAMModel)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(inputs(), output_hidden_states=True)
        assert model.embed_patches(inputs()).dtype == torch.float32
    assert all(state.dtype == torch.float32 for state in outputs.hidden_states)
    with torch.no_grad():
        assert copy.deepcopy(model).to(torch.bfloat16)(inputs()).last_hidden_state.dtype == torch.bfloat16
