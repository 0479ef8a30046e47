"""The ONNX backend test cases: materialised once into a cache folder, then run.

The `onnx` wheel ships the generators of its node test cases, not their data; `materialize()`
writes each case like the onnx repository's `backend/test/data/node` (model.onnx plus
test_data_set_N/{input,output}_K.pb) into `build/onnx-cases-<onnx version>/node` (or
$ENGINE_ONNX_CASES). The model suites (`pytorch-converted`, `pytorch-operator`, `simple`,
`light`) come with the wheel as data and are read in place.

A case passes when every output has the expected element type and shape and matches with the
case's tolerances (rtol 1e-3 and atol 1e-7 unless it sets its own), NaN matching NaN.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

# The ops the ONNX-import issue puts in scope. A case counts towards the goal when every op
# in its model is in this set (plus Constant/Identity and the control-flow ops' bodies).
IN_SCOPE = set("""
Gemm MatMul Conv ConvTranspose BatchNormalization LayerNormalization InstanceNormalization
GroupNormalization RMSNormalization MaxPool AveragePool GlobalAveragePool GlobalMaxPool LpPool LRN
Gather GatherElements GatherND ScatterElements ScatterND LSTM GRU RNN Concat Split Slice Reshape
Transpose Squeeze Unsqueeze Flatten Expand Tile Pad Shape Size Cast CastLike Where Equal Greater Less
GreaterOrEqual LessOrEqual And Or Xor Not Clip Abs Acos Acosh Asin Asinh Atan Atanh Ceil Cos Cosh Erf Exp
Floor Log Neg Reciprocal Round Sign Sin Sinh Sqrt Tan Tanh IsNaN IsInf Pow Mod ReduceSum ReduceMean
ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceSumSquare ArgMax
ArgMin Softmax LogSoftmax Hardmax TopK CumSum Trilu OneHot Einsum NonZero EyeLike Range ConstantOfShape
Constant Identity Dropout Sum Mean Max Min Relu LeakyRelu PRelu Elu Selu Celu Softplus Softsign
HardSigmoid HardSwish ThresholdedRelu Gelu Mish Swish Sigmoid Shrink DepthToSpace SpaceToDepth Resize
Upsample MeanVarianceNormalization LpNormalization Attention RotaryEmbedding SoftmaxCrossEntropyLoss
NegativeLogLikelihoodLoss If Loop Scan Add Sub Mul Div
""".split())


def cache_dir() -> Path:
    import onnx

    env = os.environ.get("ENGINE_ONNX_CASES")
    return Path(env) if env else ROOT / "build" / f"onnx-cases-{onnx.__version__}"


def model_data_dir() -> Path:
    import onnx

    return Path(onnx.__file__).parent / "backend" / "test" / "data"


@dataclass
class Case:
    name: str
    kind: str          # node, pytorch-converted, pytorch-operator, simple, light
    path: Path         # folder with model.onnx (or the .onnx file itself for `light`)
    op: str            # the op the case is about (node cases), else the suite name
    ops: list = field(default_factory=list)  # every op type in the model, subgraphs included
    rtol: float = 1e-3
    atol: float = 1e-7

    @property
    def in_scope(self) -> bool:
        return all(o in IN_SCOPE for o in self.ops)


# -- materialising the node cases ---------------------------------------------------------

def materialize(force: bool = False) -> Path:
    """Write every node case to the cache folder (once per onnx version); returns it."""
    import onnx
    from onnx import numpy_helper
    from onnx.backend.test.case.node import collect_testcases

    out = cache_dir() / "node"
    done = out / ".complete"
    if done.exists() and not force:
        return out
    out.mkdir(parents=True, exist_ok=True)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    index = {}
    for case in cases:
        if case.model is None or not case.data_sets:
            continue
        folder = out / case.name
        folder.mkdir(exist_ok=True)
        (folder / "model.onnx").write_bytes(case.model.SerializeToString())
        ok = True
        for i, (inputs, outputs) in enumerate(case.data_sets):
            ds = folder / f"test_data_set_{i}"
            ds.mkdir(exist_ok=True)
            for kind, arrays, values in (("input", inputs, case.model.graph.input),
                                         ("output", outputs, case.model.graph.output)):
                for j, a in enumerate(arrays):
                    if isinstance(a, onnx.TensorProto):  # types numpy lacks (float8, ...): stored as is
                        (ds / f"{kind}_{j}.pb").write_bytes(a.SerializeToString())
                        continue
                    if not isinstance(a, np.ndarray) and not np.isscalar(a) or np.asarray(a).dtype.kind in "OUS":
                        ok = False  # sequences, maps, optionals and strings: out of scope
                        continue
                    t = numpy_helper.from_array(np.asarray(a), values[j].name if j < len(values) else f"{kind}_{j}")
                    (ds / f"{kind}_{j}.pb").write_bytes(t.SerializeToString())
        index[case.name] = {"rtol": float(getattr(case, "rtol", 1e-3)), "atol": float(getattr(case, "atol", 1e-7)),
                            "tensors_only": ok, "ops": sorted(_ops_of(case.model.graph))}
    (out / "index.json").write_text(json.dumps(index, indent=0, sort_keys=True))
    done.write_text(onnx.__version__)
    return out


def _ops_of(graph) -> set:
    ops = set()
    for n in graph.node:
        ops.add(n.op_type)
        for a in n.attribute:
            if a.HasField("g"):
                ops |= _ops_of(a.g)
            for g in a.graphs:
                ops |= _ops_of(g)
    return ops


def node_cases() -> list[Case]:
    folder = materialize()
    index = json.loads((folder / "index.json").read_text())
    singles = {name: info["ops"][0] for name, info in index.items() if len(info["ops"]) == 1}
    cases = []
    for name, info in sorted(index.items()):
        if not info["tensors_only"]:
            continue
        base = re.sub(r"_expanded(_ver\d+)?$", "", name)
        op = singles.get(name) or singles.get(base) or _main_op(info["ops"])
        cases.append(Case(name, "node", folder / name, op, info["ops"], info["rtol"], info["atol"]))
    return cases


_HELPERS = {"Constant", "Cast", "CastLike", "Shape", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Gather",
            "Concat", "Slice", "Size", "Sub", "Add", "Mul", "Div", "ConstantOfShape", "Equal", "Where"}


def _main_op(ops: list) -> str:
    rest = [o for o in ops if o not in _HELPERS]
    return rest[0] if rest else ops[0]


def model_cases() -> list[Case]:
    """The model suites shipped with the wheel (pytorch-converted, pytorch-operator, simple,
    light)."""
    import onnx

    cases = []
    base = model_data_dir()
    for suite in ("pytorch-converted", "pytorch-operator", "simple"):
        for folder in sorted((base / suite).iterdir()):
            if (folder / "model.onnx").exists():
                ops = sorted(_ops_of(onnx.load(str(folder / "model.onnx"), load_external_data=False).graph))
                cases.append(Case(folder.name, suite, folder, suite, ops))
    for f in sorted((base / "light").glob("*.onnx")):
        ops = sorted(_ops_of(onnx.load(str(f), load_external_data=False).graph))
        cases.append(Case(f.stem, "light", f, "light", ops, rtol=1e-3, atol=1e-4))
    return cases


# -- running ---------------------------------------------------------------------------------

def read_tensor(path: Path) -> np.ndarray:
    import onnx
    from onnx import numpy_helper

    t = onnx.TensorProto()
    t.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(t)


def data_sets(case: Case):
    """[(inputs {name: array}, expected [array])] for a node or model-suite case."""
    import onnx

    model = onnx.load(str(case.path / "model.onnx"), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    in_names = [v.name for v in model.graph.input if v.name not in inits]
    sets = []
    for ds in sorted(case.path.glob("test_data_set_*")):
        ins = [read_tensor(p) for p in sorted(ds.glob("input_*.pb"), key=_index)]
        outs = [read_tensor(p) for p in sorted(ds.glob("output_*.pb"), key=_index)]
        sets.append((dict(zip(in_names, ins)), outs))
    return sets


def _index(p: Path) -> int:
    return int(p.stem.split("_")[-1])


def compare(got: list, want: list, rtol: float, atol: float) -> str:
    """'' if the outputs match, else what differs."""
    if len(got) != len(want):
        return f"{len(got)} outputs, expected {len(want)}"
    for k, (g, w) in enumerate(zip(got, want)):
        g = np.asarray(g)
        if g.dtype != w.dtype:
            return f"output {k}: dtype {g.dtype}, expected {w.dtype}"
        if g.shape != w.shape:
            return f"output {k}: shape {g.shape}, expected {w.shape}"
        if w.dtype.kind in "fc":
            try:
                np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
            except AssertionError as e:
                return f"output {k}: values differ: {str(e).strip().splitlines()[2:4]}"
        elif not np.array_equal(g, w):
            return f"output {k}: values differ ({int((g != w).sum())} of {w.size})"
    return ""


def model_path(case: Case) -> Path:
    return case.path if case.path.suffix == ".onnx" else case.path / "model.onnx"


def run_engine(case: Case, optimize: bool = True) -> tuple[str, str]:
    """('pass' | 'fail' | 'unsupported' | 'error', detail)."""
    import engine

    try:
        model = engine.load(model_path(case), optimize=optimize)
    except engine.UnsupportedOpError as e:
        return "unsupported", str(e)
    except Exception as e:  # an EngineError is a clean refusal; anything else is a bug
        return "error", f"load: {type(e).__name__}: {e}"
    for feeds, want in data_sets(case):
        try:
            got = model.run(None, feeds)
        except Exception as e:
            return "error", f"run: {type(e).__name__}: {e}"
        diff = compare(got, want, case.rtol, case.atol)
        if diff:
            return "fail", diff
    return "pass", ""


def run_ort(case: Case) -> tuple[str, str]:
    import onnxruntime as ort

    ort.set_default_logger_severity(4)
    try:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(model_path(case)), so, providers=["CPUExecutionProvider"])
    except Exception as e:
        return "error", f"load: {str(e)[:200]}"
    for feeds, want in data_sets(case):
        try:
            got = sess.run(None, feeds)
        except Exception as e:
            return "error", f"run: {str(e)[:200]}"
        diff = compare(got, want, case.rtol, case.atol)
        if diff:
            return "fail", diff
    return "pass", ""


def ort_results(cases: list[Case]) -> dict:
    """onnxruntime's status per node case, cached next to the cases (it does not change)."""
    path = cache_dir() / "ort-results.json"
    import onnxruntime

    cached = json.loads(path.read_text()) if path.exists() else {}
    if cached.get("_version") != onnxruntime.__version__:
        cached = {"_version": onnxruntime.__version__}
    missing = [c for c in cases if c.name not in cached]
    for c in missing:
        cached[c.name] = run_ort(c)[0]
    if missing:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cached, indent=0, sort_keys=True))
    return cached
