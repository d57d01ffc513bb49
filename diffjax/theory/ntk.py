"""Empirical neural tangent kernels (Jacot, Gabriel & Hongler 2018) computed directly in JAX.

For a model `apply_fn(params, x) -> (n, d)` the empirical NTK is the block kernel

    Theta(x, x')_{ab} = < d f_a(x) / d params , d f_b(x') / d params >,      a, b = 1..d,

returned as an array (n1, n2, d, d). Two ways to compute it:

  `ntk_by_jacobian`     materialise the per-example Jacobians and contract them (memory n d P);
  `ntk_vector_product`  Theta(x1, x2) v = J1 (J2^T v) by one vjp and one jvp, with no Jacobian
                        materialised (memory of two forward passes); `ntk_by_products` builds
                        the whole kernel from it one column block at a time.

For the two-layer ReLU network of `diffjax.theory.two_layer` with only the first layer
trained, f(u) = m^{-1/2} sum_r a_r relu(w_r . u), the kernel is known in closed form:

    Theta(u, u') = (u . u') / m  sum_r a_r a_r^T 1[w_r . u > 0] 1[w_r . u' > 0],

and with w_r ~ N(0, I), independent random-sign a_r, its infinite-width limit is
(u . u') (pi - arccos rho) / (2 pi) I_d, rho the cosine of the angle between u and u'
(Cho & Saul 2009, arc-cosine kernel of degree 0; Du et al. 2019, eq. 4).
"""
import jax
import jax.numpy as jnp
import numpy as np


def _flat_leaves(tree, batch_dims):
  leaves = jax.tree_util.tree_leaves(tree)
  return [leaf.reshape(leaf.shape[:batch_dims] + (-1,)) for leaf in leaves]


def ntk_by_jacobian(apply_fn, params, x1, x2=None):
  """Empirical NTK by Jacobian contraction.

  Args:
    apply_fn: `apply_fn(params, x)` returning (n, d); examples must not interact.
    params: the pytree the kernel differentiates with respect to.
    x1: (n1, ...) inputs.
    x2: (n2, ...) inputs; defaults to x1.

  Returns:
    (n1, n2, d, d) with [i, j, a, b] = < grad f_a(x1_i), grad f_b(x2_j) >.
  """
  jac1 = _flat_leaves(jax.jacrev(apply_fn)(params, x1), 2)  # each (n1, d, P_leaf)
  jac2 = jac1 if x2 is None else _flat_leaves(jax.jacrev(apply_fn)(params, x2), 2)
  return sum(jnp.einsum("iap,jbp->ijab", j1, j2) for j1, j2 in zip(jac1, jac2))


def ntk_vector_product(apply_fn, params, x1, x2, v):
  """Theta(x1, x2) v without forming a Jacobian: J(x1) [J(x2)^T v], one vjp then one jvp.

  Args:
    apply_fn: `apply_fn(params, x)` returning (n, d).
    params: parameter pytree.
    x1: (n1, ...) inputs of the result.
    x2: (n2, ...) inputs the vector lives on.
    v: (n2, d).

  Returns:
    (n1, d) with [i, a] = sum_{j, b} Theta(x1_i, x2_j)_{ab} v_{j, b}.
  """
  _, vjp_fn = jax.vjp(lambda p: apply_fn(p, x2), params)
  (tangent,) = vjp_fn(v)
  _, out = jax.jvp(lambda p: apply_fn(p, x1), (params,), (tangent,))
  return out


def ntk_by_products(apply_fn, params, x1, x2, out_dim):
  """The whole empirical NTK from NTK-vector products against the basis of (n2, d).

  Memory grows with n2 d forward passes rather than with the parameter count, which is the
  form to use when the per-example Jacobians do not fit.

  Returns:
    (n1, n2, d, d), equal to `ntk_by_jacobian(apply_fn, params, x1, x2)`.
  """
  n2 = x2.shape[0]
  basis = jnp.eye(n2 * out_dim, dtype=jnp.result_type(*jax.tree_util.tree_leaves(params)))
  basis = basis.reshape(n2 * out_dim, n2, out_dim)
  columns = jax.lax.map(lambda v: ntk_vector_product(apply_fn, params, x1, x2, v), basis)
  return columns.reshape(n2, out_dim, x1.shape[0], out_dim).transpose(2, 0, 3, 1)


def two_layer_relu_ntk(w, a, u1, u2=None):
  """Closed-form empirical NTK of f(u) = m^{-1/2} sum_r a_r relu(w_r . u), first layer trained.

  Args:
    w: (m, k) first-layer weights.
    a: (m, d) fixed output weights.
    u1: (n1, k) inputs.
    u2: (n2, k) inputs; defaults to u1.

  Returns:
    (n1, n2, d, d).
  """
  u2 = u1 if u2 is None else u2
  act1 = (u1 @ w.T > 0).astype(w.dtype)  # relu'(w . u); relu'(0) = 0 as in jax.nn.relu
  act2 = (u2 @ w.T > 0).astype(w.dtype)
  gram = u1 @ u2.T
  return gram[:, :, None, None] * jnp.einsum("ir,jr,ra,rb->ijab", act1, act2, a, a) / w.shape[0]


def relu_ntk_infinite_width(u1, u2=None):
  """Infinite-width limit of `two_layer_relu_ntk` for w ~ N(0, I), per output: (n1, n2).

  E_w[1(w.u > 0) 1(w.u' > 0)] = (pi - theta) / (2 pi), theta the angle between u and u', so
  the kernel is (u . u') (pi - theta) / (2 pi); for independent random-sign outputs the block
  kernel is this times I_d.
  """
  u2 = u1 if u2 is None else u2
  unit1 = u1 / jnp.linalg.norm(u1, axis=-1, keepdims=True)
  unit2 = u2 / jnp.linalg.norm(u2, axis=-1, keepdims=True)
  # theta = 2 atan2(|e1 - e2|, |e1 + e2|) keeps full precision near 0 and pi, where arccos(cos)
  # loses half the digits.
  theta = 2 * jnp.arctan2(jnp.linalg.norm(unit1[:, None] - unit2[None], axis=-1),
                          jnp.linalg.norm(unit1[:, None] + unit2[None], axis=-1))
  return (u1 @ u2.T) * (np.pi - theta) / (2 * np.pi)


def kernel_matrix(kernel, out_dim=None):
  """Flattens a kernel to the (n1 d, n2 d) matrix acting on (n, d) arrays flattened row-major.

  `kernel` is either a block kernel (n1, n2, d, d) or a scalar kernel (n1, n2), which stands
  for kernel (x) I_d and needs `out_dim`.
  """
  if kernel.ndim == 4:
    n1, n2, d, _ = kernel.shape
    return kernel.transpose(0, 2, 1, 3).reshape(n1 * d, n2 * d)
  if kernel.ndim != 2:
    raise ValueError(f"kernel must be (n1, n2) or (n1, n2, d, d); got shape {kernel.shape}")
  if out_dim is None:
    raise ValueError("kernel_matrix: a scalar (n1, n2) kernel needs out_dim")
  return jnp.kron(kernel, jnp.eye(out_dim, dtype=kernel.dtype))
