"""bfloat16 matrix products summed in float32, forward and backward, on XLA's CPU backend.

XLA:CPU hands a product of two bfloat16 operands to its fast kernels (YNNPACK) only when the
result is float32. A product whose result is bfloat16, which is what a bfloat16 model's einsums
and their gradients ask for, it computes from float32 copies of both operands instead: the weights
converted every step, then a float32 kernel (measured here: 89-123 against 325-342 GFLOP/s for a
512 x 640 x 2048 product). Under `float32_sums`, every product with a bfloat16 operand is traced
as bfloat16 x bfloat16 with a float32 result, cast to the dtype it would have had. The arithmetic
is the one asked for (bfloat16 products are exact in float32, and both paths sum in float32); the
kernels, and so the last bits of the sums, are the library's.

It works where products are made, at the binding of `dot_general`, so that it also reaches the
products JAX makes for the backward pass (a float32 cotangent of a bfloat16 product is rounded to
bfloat16, as the product without it would have had it). It is active while a step is traced
(compiled), not while it runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive

_FLOATS = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32))


def _dtype(x: Any) -> jnp.dtype:
    return jnp.dtype(getattr(x, "dtype", None) or jnp.result_type(x))


def _rewrites(a: Any, b: Any) -> bool:
    """Both operands bfloat16 or float32, at least one of them bfloat16."""
    kinds = {_dtype(a), _dtype(b)}
    return kinds <= set(_FLOATS) and jnp.dtype(jnp.bfloat16) in kinds


def _contract_last(a: Any, dims: tuple) -> tuple[Any, tuple]:
    """`a` transposed to (batch, kept, contracted) axes, and the dimension numbers for it: the
    kernels take a left operand contracted over its last axes only (a weight's gradient, x.T @ g,
    is otherwise computed in float32 from float32 copies). The product's axes are unchanged."""
    (lc, rc), (lb, rb) = dims
    kept = [i for i in range(a.ndim) if i not in lc and i not in lb]
    order = [*lb, *kept, *lc]
    if order == list(range(a.ndim)):
        return a, dims
    nb, nk = len(lb), len(kept)
    new = ((tuple(range(nb + nk, a.ndim)), rc), (tuple(range(nb)), rb))
    # Behind a barrier: XLA would fold the transpose back into the product.
    return jax.lax.optimization_barrier(jax.lax.transpose(a, order)), new


@contextlib.contextmanager
def float32_sums() -> Iterator[None]:
    """Trace every product with a bfloat16 operand as bfloat16 x bfloat16 summed in float32."""
    original = Primitive.bind
    bf16, f32 = _FLOATS

    def bind(self, *args, **params):
        if self is not jax.lax.dot_general_p or not _rewrites(*args):
            return original(self, *args, **params)
        a, b = args
        out = params.get("preferred_element_type") or jnp.result_type(_dtype(a), _dtype(b))
        a, b = (jax.lax.convert_element_type(x, bf16) for x in (a, b))
        moved, dims = _contract_last(a, params["dimension_numbers"])
        params = {**params, "dimension_numbers": dims, "preferred_element_type": f32}
        result = original(self, moved, b, **params)
        if moved is not a:  # nor may XLA fold a transpose of the result back into it
            result = jax.lax.optimization_barrier(result)
        return result if jnp.dtype(out) == f32 else jax.lax.convert_element_type(result, out)

    # JAX caches traces (jnp.einsum is a jitted function of its own): none made before may be
    # used inside, and none made inside may be used after.
    jax.clear_caches()
    Primitive.bind = bind
    try:
        yield
    finally:
        Primitive.bind = original
        jax.clear_caches()
