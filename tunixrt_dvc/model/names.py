"""Parameter names on disk: Hugging Face's and Google's (Kaggle's orbax layout) for Gemma3.

Both maps take the model's parameters as a pure dict and use jnp ops only, so `jax.eval_shape`
over them gives the names and shapes a checkpoint must contain.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from tunix.models.gemma3 import model as gemma3

from tunixrt_dvc.model.config import ModelConfig


def layer_params(state: dict, config: ModelConfig):
    for i in range(config.num_layers):
        yield i, state["layers"][i]


def hf_state(state: dict, config: ModelConfig) -> dict[str, jax.Array]:
    """The parameters under Hugging Face Gemma3 names, in PyTorch's (out, in) orientation."""
    d = config.embed_dim
    out = {"model.embed_tokens.weight": state["embedder"]["input_embedding"]}
    for i, layer in layer_params(state, config):
        p = f"model.layers.{i}."
        attn = layer["attn"]
        if "qkv_einsum" in attn:
            q, k, v = (attn["qkv_einsum"]["w"][j] for j in range(3))
        else:
            q = attn["q_einsum"]["w"]
            k, v = attn["kv_einsum"]["w"][0], attn["kv_einsum"]["w"][1]
        # (heads, embed, head_dim) -> (heads * head_dim, embed)
        for name, w in (("q_proj", q), ("k_proj", k), ("v_proj", v)):
            out[p + f"self_attn.{name}.weight"] = jnp.transpose(w, (0, 2, 1)).reshape(-1, d)
        out[p + "self_attn.o_proj.weight"] = attn["attn_vec_einsum"]["w"].reshape(-1, d).T
        out[p + "self_attn.q_norm.weight"] = attn["_query_norm"]["scale"]
        out[p + "self_attn.k_norm.weight"] = attn["_key_norm"]["scale"]
        for name in ("gate_proj", "up_proj", "down_proj"):
            out[p + f"mlp.{name}.weight"] = layer["mlp"][name]["kernel"].T
        out[p + "input_layernorm.weight"] = layer["pre_attention_norm"]["scale"]
        out[p + "post_attention_layernorm.weight"] = layer["post_attention_norm"]["scale"]
        out[p + "pre_feedforward_layernorm.weight"] = layer["pre_ffw_norm"]["scale"]
        out[p + "post_feedforward_layernorm.weight"] = layer["post_ffw_norm"]["scale"]
    out["model.norm.weight"] = state["final_norm"]["scale"]
    return out


def upstream_state(state: dict, config: ModelConfig) -> dict[str, dict[str, jax.Array]]:
    """The parameters under the names of Google's Gemma checkpoints (Kaggle's orbax layout)."""
    out = {
        "transformer/embedder": {"input_embedding": state["embedder"]["input_embedding"]},
        "transformer/final_norm": {"scale": state["final_norm"]["scale"]},
    }
    for i, layer in layer_params(state, config):
        p = f"transformer/layer_{i}/"
        for name, module in layer["attn"].items():
            out[p + f"attn/{name}"] = dict(module)  # q/kv/qkv/attn_vec einsums, q/k norms
        mlp = layer["mlp"]
        gating = jnp.stack([mlp["gate_proj"]["kernel"].T, mlp["up_proj"]["kernel"].T])
        out[p + "mlp/gating_einsum"] = {"w": gating}
        out[p + "mlp/linear"] = {"w": mlp["down_proj"]["kernel"]}
        for name in ("pre_attention_norm", "post_attention_norm", "pre_ffw_norm", "post_ffw_norm"):
            out[p + name] = {"scale": layer[name]["scale"]}
    return out


def abstract_state(config: ModelConfig) -> dict:
    model = nnx.eval_shape(lambda: gemma3.Gemma3(config, rngs=nnx.Rngs(params=0)))
    return nnx.state(model, nnx.Param).to_pure_dict()


def expected_hf(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    shapes = jax.eval_shape(lambda s: hf_state(s, config), abstract_state(config))
    return {k: tuple(v.shape) for k, v in shapes.items()}


def expected_upstream(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    shapes = jax.eval_shape(lambda s: upstream_state(s, config), abstract_state(config))
    return {f"{m}.{p}": tuple(v.shape) for m, params in shapes.items() for p, v in params.items()}
