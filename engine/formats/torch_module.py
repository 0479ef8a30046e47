"""A live torch.nn.Module as an engine Model: `engine.from_torch(module, example_inputs)`.

The module goes through torch's own ONNX exporter (the TorchScript exporter first, with a
dynamic batch axis on every input and output; the dynamo exporter if that one fails), into
memory (no file is written), then through engine's ONNX reader. Both are then run on the
example inputs, and a result that differs from torch's is an error rather than a surprise
later. torch is imported here only, when this is called.
"""

from __future__ import annotations

import io
import warnings

import numpy as np

from ..errors import EngineError


def from_torch(module, example_inputs, *, tolerance: float = 1e-4, **export_kwargs):
    """An engine.Model computing what `module` computes, checked on `example_inputs`.

    example_inputs: a tensor, a tuple/list of tensors (the forward's positional arguments) or
    a dict {name: tensor} (positional, in that order, the names becoming the model's input
    names). numpy arrays are taken too. Outputs may differ from torch's by `tolerance`
    (relative for values above 1). export_kwargs go to torch.onnx.export (opset_version,
    dynamic_axes, input_names, ...).

    >>> model = engine.from_torch(net, torch.randn(2, 1000))
    >>> model.predict(x)
    """
    import torch

    import engine

    if not isinstance(module, torch.nn.Module):
        raise EngineError(f"from_torch: expected a torch.nn.Module, got {type(module).__name__}")
    names, args = _inputs(example_inputs, torch)
    was_training = module.training
    module.eval()  # dropout off, BatchNorm on its running statistics: what serving computes
    try:
        with torch.no_grad():
            expected = _flat_outputs(module(*args), torch)
            onnx_bytes = _export(module, args, names, len(expected), export_kwargs, torch)
    finally:
        module.train(was_training)
    model = engine.load(onnx_bytes)
    feeds = {n: a.detach().cpu().numpy() for n, a in zip(names, args)}
    feeds = {i.name: feeds[i.name] for i in model.inputs if i.name in feeds}
    got = model.run(None, feeds)
    _compare(type(module).__name__, expected, got, tolerance)
    return model


def _inputs(example_inputs, torch):
    if isinstance(example_inputs, dict):
        names, values = list(example_inputs), list(example_inputs.values())
    else:
        values = list(example_inputs) if isinstance(example_inputs, (tuple, list)) else [example_inputs]
        names = [f"input_{i}" for i in range(len(values))]
    args = []
    for n, v in zip(names, values):
        if isinstance(v, np.ndarray):
            v = torch.from_numpy(v)
        if not isinstance(v, torch.Tensor):
            raise EngineError(f"from_torch: example input '{n}' is a {type(v).__name__}; give tensors "
                              "(or numpy arrays)")
        args.append(v)
    if not args:
        raise EngineError("from_torch: give at least one example input")
    return names, tuple(args)


def _flat_outputs(out, torch) -> list:
    if isinstance(out, torch.Tensor):
        return [out.detach().cpu().numpy() if out.dtype != torch.bfloat16 else out.float().numpy()]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [a for o in out for a in _flat_outputs(o, torch)]
    return []  # non-tensor outputs are not part of the exported graph


def _export(module, args, names, n_out, export_kwargs, torch) -> bytes:
    outs = [f"output_{i}" for i in range(n_out)]
    kw = {"input_names": names, "output_names": outs,
          "dynamic_axes": {n: {0: "batch"} for n in names + outs}, **export_kwargs}
    buf = io.BytesIO()
    with warnings.catch_warnings():  # exporter chatter (tracer, deprecation) is not the user's concern
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, args, buf, dynamo=False, **kw)
            return buf.getvalue()
        except Exception as e:  # the TorchScript exporter's limits: fall back to dynamo
            first = f"{type(e).__name__}: {str(e)[:300]}"
        dyn = {k: v for k, v in kw.items() if k not in ("dynamic_axes", "output_names")}
        dyn.setdefault("dynamic_shapes", tuple({0: torch.export.Dim.AUTO} for _ in args))
        dyn.setdefault("verbose", False)
        try:
            program = torch.onnx.export(module, args, dynamo=True, external_data=False, **dyn)
            return program.model_proto.SerializeToString()
        except Exception as e:
            raise EngineError(f"from_torch: torch could not export {type(module).__name__} to ONNX "
                              f"(TorchScript exporter: {first}; dynamo exporter: {type(e).__name__}: "
                              f"{str(e)[:300]})") from None


def _compare(what: str, expected: list, got: list, tol: float) -> None:
    if len(expected) != len(got):
        raise EngineError(f"from_torch: {what} returns {len(expected)} tensors but the exported model "
                          f"{len(got)}")
    for i, (e, g) in enumerate(zip(expected, got)):
        if e.shape != g.shape:
            raise EngineError(f"from_torch: output {i} of {what} has shape {e.shape} in torch, "
                              f"{g.shape} in engine")
        if e.dtype.kind in "biu":
            if not np.array_equal(e, g):
                raise EngineError(f"from_torch: output {i} of {what} differs from torch's")
            continue
        e64, g64 = e.astype(np.float64), g.astype(np.float64)
        err = np.abs(e64 - g64) / np.maximum(1.0, np.abs(e64))
        err[np.isnan(e64) & np.isnan(g64)] = 0.0  # NaN where torch has NaN is agreement
        if err.size and not (err.max() <= tol):  # also catches NaN where torch has a number
            j = np.unravel_index(np.nanargmax(np.where(np.isnan(err), np.inf, err)), err.shape)
            raise EngineError(f"from_torch: output {i} of {what} differs from torch's by {err[j]:.3g} "
                              f"(tolerance {tol}) at {tuple(int(k) for k in j)}: torch {e64[j]!r}, "
                              f"engine {g64[j]!r}")


__all__ = ["from_torch"]
