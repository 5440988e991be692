"""Many small L-BFGS minimisations at once, in JAX.

A problem is a start ``theta0 (P,)`` plus its data. `compile_run` compiles, for one
objective, a resumable ``run`` vmapped over a chunk of problems, and `minimize_many`
drives it in rounds: after each round the finished problems leave and the rest are
packed into fewer chunks, so a few slow starts do not keep thousands of finished ones
computing (a vmapped while-loop runs until its slowest member stops).

The line search is spread over iterations: each iteration evaluates the objective and its
gradient once, at a trial step; a trial failing the Armijo test is shrunk (quadratic
interpolation) and retried from the same point at the next iteration. So every iteration
costs exactly one value-and-gradient evaluation, whatever the other problems do. The
first iteration evaluates the start itself (a fresh state has value +inf, gradient 0).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

MEMORY = 10      # stored (s, y) pairs
ARMIJO = 1e-4    # sufficient-decrease constant
CHUNK = 64       # problems advanced together by one compiled call
ROUND = 25       # iterations between repacking the unfinished problems


class State(NamedTuple):
    """L-BFGS state of one problem (or of a batch, with a leading axis). The memory is
    ordered oldest..newest."""

    theta: jax.Array      # (P,) current point
    value: jax.Array      # objective at theta (+inf before the first evaluation)
    grad: jax.Array       # (P,) gradient at theta
    s_mem: jax.Array      # (MEMORY, P) steps
    y_mem: jax.Array      # (MEMORY, P) gradient changes
    rho: jax.Array        # (MEMORY,) 1 / (s . y); 0 marks an empty slot
    n_mem: jax.Array      # pairs stored
    step: jax.Array       # next trial step length
    it: jax.Array         # evaluations used
    done: jax.Array       # stopped (converged or failed)
    converged: jax.Array


def fresh(theta0: np.ndarray) -> State:
    """Numpy states ``(M, ...)`` for starts ``theta0 (M, P)``, before any evaluation."""
    m, (n, p), dt = MEMORY, theta0.shape, theta0.dtype
    return State(theta0.copy(), np.full(n, np.inf, dt), np.zeros((n, p), dt),
                 np.zeros((n, m, p), dt), np.zeros((n, m, p), dt), np.zeros((n, m), dt),
                 np.zeros(n, np.int32), np.ones(n, dt), np.zeros(n, np.int32),
                 np.zeros(n, bool), np.zeros(n, bool))


def _direction(g: jax.Array, st: State) -> jax.Array:
    """Quasi-Newton direction ``-H g`` by the two-loop recursion."""
    m = MEMORY

    def newest_first(j, qa):
        q, a = qa
        i = m - 1 - j
        a = a.at[i].set(st.rho[i] * (st.s_mem[i] @ q))
        return q - a[i] * st.y_mem[i], a

    q, a = jax.lax.fori_loop(0, m, newest_first, (g, jnp.zeros(m, g.dtype)))
    s, y = st.s_mem[-1], st.y_mem[-1]
    gamma = jnp.where(st.n_mem > 0, (s @ y) / (y @ y), 1.0 / jnp.maximum(jnp.linalg.norm(g), 1e-300))

    def oldest_first(i, r):
        return r + st.s_mem[i] * (a[i] - st.rho[i] * (st.y_mem[i] @ r))

    return -jax.lax.fori_loop(0, m, oldest_first, gamma * q)


def _iterate(f, st: State, gtol: jax.Array, ftol: jax.Array) -> State:
    """One evaluation: try ``theta + step * d``; accept (Armijo) or shrink the step.

    Converged: max |gradient| <= gtol; or an accepted step lowered f by a relative amount
    <= ftol; or not even a vanishing steepest-descent step lowers f (numerically
    stationary). A start where f or its gradient is not finite stops, not converged.
    """
    g = st.grad
    d = _direction(g, st)
    descent = g @ d < 0
    n_mem = jnp.where(descent, st.n_mem, 0)  # not a descent direction: steepest descent
    rho = jnp.where(descent, st.rho, 0.0)
    d = jnp.where(descent, d, -g / jnp.maximum(jnp.linalg.norm(g), 1e-300))
    slope, t = g @ d, st.step
    trial = st.theta + t * d
    value, grad = jax.value_and_grad(f)(trial)
    ok = jnp.isfinite(value) & jnp.all(jnp.isfinite(grad)) & (value <= st.value + ARMIJO * t * slope)
    started = jnp.isfinite(st.value)  # False only when evaluating the start itself

    # accepted: remember the pair if its curvature is positive; the next trial is a full step
    s, y = trial - st.theta, grad - g
    sy = s @ y
    store = ok & (sy > 1e-10 * jnp.linalg.norm(s) * jnp.linalg.norm(y))
    push = lambda mem, new: jnp.where(store, jnp.concatenate([mem[1:], new[None]]), mem)
    s_mem, y_mem, rho = push(st.s_mem, s), push(st.y_mem, y), push(rho, 1.0 / sy)
    n_mem = jnp.where(store, jnp.minimum(n_mem + 1, MEMORY), n_mem)
    small_grad = jnp.max(jnp.abs(grad)) <= gtol
    small_dec = started & (st.value - value <= ftol * jnp.maximum(jnp.abs(st.value), jnp.abs(value)))

    # rejected: shrink the step; a vanishing step forgets the memory or, with the memory
    # already empty, means that no descent is numerically possible
    curv = value - st.value - slope * t
    t_quad = jnp.where(jnp.isfinite(curv) & (curv > 0), -slope * t * t / (2 * curv), 0.1 * t)
    t_next = jnp.clip(t_quad, 0.1 * t, 0.5 * t)
    vanish = ~ok & (t_next * jnp.linalg.norm(d) <= 1e-14 * (1.0 + jnp.linalg.norm(st.theta)))
    stuck = vanish & (n_mem == 0) & started
    rho, n_mem = jnp.where(vanish, 0.0, rho), jnp.where(vanish, 0, n_mem)

    converged = (ok & (small_grad | small_dec)) | stuck
    keep = lambda new, old: jnp.where(ok, new, old)
    return State(keep(trial, st.theta), keep(value, st.value), keep(grad, g), s_mem, y_mem, rho,
                 n_mem, jnp.where(ok | vanish, 1.0, t_next).astype(t.dtype), st.it + 1,
                 converged | (~ok & ~started), converged)


def run(f, st: State, stop_at: jax.Array, gtol: jax.Array, ftol: jax.Array) -> State:
    """Iterate until stopped or ``stop_at`` evaluations have been used."""
    return jax.lax.while_loop(lambda s: (s.it < stop_at) & ~s.done,
                              lambda s: _iterate(f, s, gtol, ftol), st)


def compile_run(f: Callable) -> Callable:
    """``run(state, shared, rows, stop_at, gtol, ftol)`` for the objective
    ``f(theta, shared, rows)`` (``rows``: each problem's own data), jit-compiled and
    vmapped over the problems of a chunk."""
    def one(st, shared, rows, stop_at, gtol, ftol):
        return run(lambda t: f(t, shared, rows), st, stop_at, gtol, ftol)

    return jax.jit(jax.vmap(one, in_axes=(0, None, 0, None, None, None)))


def minimize_many(run_chunk: Callable, theta0: np.ndarray, shared: object,
                  data: tuple[np.ndarray, ...], row: np.ndarray, max_iter: int, gtol: float,
                  ftol: float) -> State:
    """Minimise ``M`` problems: start ``theta0[i]`` with data ``[d[row[i]] for d in data]``.

    ``run_chunk`` is from `compile_run`. Runs rounds of `ROUND` iterations over the
    unfinished problems, packed in chunks of `CHUNK` (the last chunk padded by repeating a
    problem, so one compilation serves all), the chunks of a round spread over the CPU
    cores by threads. ``gtol``, ``ftol``: convergence tolerances (see `_iterate`).
    Returns the final `State` of every problem as numpy arrays with a leading ``M`` axis;
    problems still running after ``max_iter`` evaluations have ``converged`` False.
    """
    x64 = theta0.dtype == np.float64  # worker threads do not inherit the caller's x64 context
    state = fresh(theta0)
    active, stop_at = np.arange(len(theta0)), 0
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        while active.size:
            stop_at = min(stop_at + ROUND, max_iter)
            idx = np.concatenate([active, np.full(-active.size % CHUNK, active[-1])])
            rows = tuple(d[row[idx]] for d in data)
            current = State(*(a[idx] for a in state))

            def advance(i: int) -> State:
                part = slice(i * CHUNK, (i + 1) * CHUNK)
                with jax.enable_x64(x64):
                    out = run_chunk(State(*(jnp.asarray(a[part]) for a in current)), shared,
                                    tuple(jnp.asarray(d[part]) for d in rows), stop_at, gtol, ftol)
                    return State(*(np.asarray(a) for a in out))

            parts = list(pool.map(advance, range(len(idx) // CHUNK)))
            for full, *pieces in zip(state, *parts):
                full[idx] = np.concatenate(pieces)
            active = np.flatnonzero(~state.done & (state.it < max_iter))
    return state
