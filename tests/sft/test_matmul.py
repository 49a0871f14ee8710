"""`float32_sums`: bfloat16 products traced as XLA:CPU's fast kernels take them, same values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.core import Primitive

from tunixrt_dvc.sft.matmul import float32_sums

BF16 = jnp.bfloat16


def _loss(w, x):
    return jnp.sum(jnp.tanh(jnp.einsum("td,dh->th", x, w)).astype(jnp.float32) ** 2)


@pytest.fixture(scope="module")
def operands():
    keys = jax.random.split(jax.random.key(0), 2)
    # Gemma 3 270M's MLP: XLA's choices depend on the shapes.
    w = jax.random.normal(keys[0], (640, 2048)).astype(BF16) / 25
    x = jax.random.normal(keys[1], (512, 640)).astype(BF16)
    return w, x


def _hlo(fn, *args) -> str:
    return jax.jit(fn).lower(*args).compile().as_text()


def test_products_and_their_gradients_take_bfloat16_operands_summed_in_float32(operands):
    w, x = operands
    without = _hlo(jax.value_and_grad(_loss), w, x)
    plain = jax.value_and_grad(_loss)  # a function of its own: jit caches what it traced
    with float32_sums():
        jaxpr = jax.make_jaxpr(plain)(w, x)
        hlo = _hlo(plain, w, x)
    dots = [e for e in jaxpr.eqns if e.primitive is jax.lax.dot_general_p]
    assert len(dots) == 2  # the forward product and the weight's gradient
    for e in dots:
        assert [v.aval.dtype for v in e.invars] == [BF16, BF16]
        assert e.params["preferred_element_type"] == jnp.float32
    # No float32 copy of the weight is made to multiply with, as XLA:CPU does without.
    assert "f32[640,2048]" not in hlo
    assert "f32[640,2048]" in without


def test_the_values_are_those_of_the_products_computed_in_float32(operands):
    w, x = operands
    ref_loss, ref_grad = jax.value_and_grad(
        lambda w, x: _loss(w.astype(jnp.float32), x.astype(jnp.float32))
    )(w, x)
    with float32_sums():
        step = jax.jit(jax.value_and_grad(_loss))
        loss, grad = step(w, x)
    assert grad.dtype == BF16 and grad.shape == w.shape
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-2)  # tanh's bfloat16 output
    err = np.linalg.norm(np.asarray(grad, np.float32) - np.asarray(ref_grad))
    assert err <= 2e-2 * np.linalg.norm(np.asarray(ref_grad))


def test_float32_products_and_other_primitives_are_left_alone():
    a = jnp.ones((4, 8), jnp.float32)
    with float32_sums():
        jaxpr = jax.make_jaxpr(lambda a: jnp.exp(a @ a.T))(a)
    (dot,) = [e for e in jaxpr.eqns if e.primitive is jax.lax.dot_general_p]
    assert dot.params["preferred_element_type"] in (None, jnp.float32)
    assert [v.aval.dtype for v in dot.invars] == [jnp.float32, jnp.float32]
    assert not any(e.primitive.name == "convert_element_type" for e in jaxpr.eqns)


def test_the_patch_is_undone_after_the_block_even_on_error():
    before = Primitive.bind
    with pytest.raises(RuntimeError), float32_sums():
        assert Primitive.bind is not before
        raise RuntimeError("inside")
    assert Primitive.bind is before
