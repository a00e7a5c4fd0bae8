"""Command line interface: ``upweight demo``, ``upweight seed``, ``upweight fit``, ``upweight score``.

This module parses the arguments and runs ``seed``, ``fit`` and ``score``; ``upweight demo``
(:mod:`.demo`) fits a logistic regression to the bundled breast-cancer data and reports which
training points most help and most hurt the worst-predicted test points, checks them against
exact leave-one-out refits, and writes figures.
"""

from __future__ import annotations

import argparse
import os
import sys

from .._constants import BLOCK_ROWS
from .._core import __version__
from ..errors import InputError, UpweightError
from ..examples import seed_example
from ..influence import Influence
from ..io import resume
from ..io.persist import load_model, save_model
from ..io.tables import SCORE_FORMATS, check_output, read_table, read_vector, write_scores
from ..models import LinearRegression, LogisticRegression, PoissonRegression
from ..solver import INFLUENCE_SOLVERS
from .demo import run as run_demo
from .network_demo import run as run_network_demo


class ProgressBar:
    """A one-line progress bar on stderr, fed by upweight's progress callback."""

    def __init__(self, label: str, enabled: bool):
        self.label, self.enabled, self.drawn = label, enabled, False

    def __call__(self, pass_: int, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        frac = min(done / total, 1.0)
        bar = "#" * int(30 * frac)
        sys.stderr.write(f"\r{self.label}: pass {pass_} [{bar:<30}] {done:,}/{total:,} rows {100 * frac:3.0f}%")
        sys.stderr.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")
            self.drawn = False


ESTIMATORS = {"linear": LinearRegression, "logistic": LogisticRegression, "poisson": PoissonRegression}


def _training_data(args):
    X, y = read_table(args.train, "train", args.target_column, args.y, stream=True, drop=args.drop)
    if y is None:
        raise _input_error("train: no target: pass --y FILE or a table with a target column (--target-column)")
    w = None
    if args.weights:
        w = read_vector(args.weights, "--weights")
    return X, y, w


def _input_error(msg: str) -> InputError:
    return InputError(msg)


def _fit_model(args, X, y, w, bar):
    model = ESTIMATORS[args.family](l2=args.l2, progress=bar)
    model.fit(X, y, sample_weight=w)
    bar.close()
    model.set_params(progress=None)
    return model


def _inputs(args) -> list[tuple[str, str | None]]:
    """The files a command reads, by argument."""
    names = ("train", "y", "weights", "model", "query", "query_y")
    return [("--" + a.replace("_", "-") if a != "train" else a, getattr(args, a, None)) for a in names]


def _fit(args: argparse.Namespace) -> int:
    check_output(args.output, _inputs(args), args.force)
    X, y, w = _training_data(args)
    bar = ProgressBar("fit", not args.quiet)
    model = _fit_model(args, X, y, w, bar)
    save_model(model, args.output, force=args.force)
    print(f"fitted {type(model).__name__} ({model.family}, l2={model.l2:g}) on {len(y)} points in "
          f"{model.n_iter_} Newton iterations (gradient norm {model.grad_norm_:.1e}); saved to {args.output}")
    return 0


def _score(args: argparse.Namespace) -> int:
    # every argument and the output checked before the first pass over the data
    check_output(args.output, _inputs(args), args.force, SCORE_FORMATS)
    if args.what in ("top-k", "loo-top-k") and args.k < 1:
        raise _input_error(f"k: expected a positive integer, got {args.k}")
    resume.check_segment_rows(args.segment_rows)
    X, y, w = _training_data(args)
    bar = ProgressBar("score", not args.quiet)
    if args.model:
        model = load_model(args.model)
    elif args.family:
        model = _fit_model(args, X, y, w, ProgressBar("fit", not args.quiet))
    else:
        raise _input_error("model: pass --model FILE (from `upweight fit`) or --family to fit one")
    if args.resume and args.what == "full":
        raise _input_error("resume: --resume applies to --what top-k, loo-top-k and self (streamed in segments)")
    inf = Influence(model, X, y, sample_weight=w, solver=args.solver, damping=args.damping, progress=bar, rank=args.rank,
                    arnoldi_inverse=args.arnoldi_inverse)
    settings = {k: getattr(args, k) for k in ("what", "k", "family", "l2", "solver", "damping", "target_column", "segment_rows")}
    if args.solver == "arnoldi":  # (older checkpoints' fingerprints stay valid for the exact solvers)
        settings |= {"rank": args.rank, "arnoldi_inverse": args.arnoldi_inverse}
    if args.drop:
        settings["drop"] = args.drop
    files = [args.train, args.y, args.weights, args.model, args.query, args.query_y]
    fp = resume.fingerprint(settings, [f for f in files if f])
    say = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    if args.what == "self":
        arrays = resume.run(inf, "self", args.output, fp, args.resume, args.segment_rows, say=say)
    else:
        if not args.query:
            raise _input_error(f"query: --what {args.what} needs --query FILE")
        Xq, yq = read_table(args.query, "query", args.target_column, args.query_y, drop=args.drop)
        if yq is None:
            raise _input_error("query: no target: pass --query-y FILE or a table with a target column")
        if args.what == "top-k":
            arrays = resume.run(inf, "top-k", args.output, fp, args.resume, args.segment_rows, G=inf.loss_grads(Xq, yq), k=args.k, say=say)
        elif args.what == "loo-top-k":
            arrays = resume.run(inf, "loo-top-k", args.output, fp, args.resume, args.segment_rows, k=args.k, say=say, queries=(Xq, yq))
        else:
            arrays = {"scores": inf.on_loss(Xq, yq)}
    bar.close()
    write_scores(args.output, arrays, force=args.force)
    if os.path.exists(resume.checkpoint_path(args.output)):
        os.unlink(resume.checkpoint_path(args.output))
    residual = inf.solve_info.max_residual if inf.solve_info is not None else 0.0
    print(f"wrote {args.what} scores for {inf.n_samples} training points to {args.output} "
          f"(solver {inf.solver}, max relative residual {residual:.1e})")
    return 0


def _column_names(value: str) -> list[str]:
    return [c.strip() for c in value.split(",") if c.strip()]


def _add_training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("train", help="training features: .npy (streamed block by block, may exceed memory), .npz (arrays X, y; "
                   "or a scipy.sparse.save_npz matrix, used sparse), .csv or .parquet (header row)")
    p.add_argument("--y", metavar="FILE", help="training targets (.npy) when TRAIN holds features only")
    p.add_argument("--target-column", metavar="NAME", help="target column (CSV/Parquet) or array (.npz) name (default: y)")
    p.add_argument("--drop", metavar="NAME[,NAME...]", action="extend", default=[], type=_column_names,
                   help="CSV/Parquet columns that are not features (identifiers, text), in training and query tables; repeatable")
    p.add_argument("--weights", metavar="FILE", help="sample weights (.npy), default all 1")
    p.add_argument("--family", choices=sorted(ESTIMATORS),
                   help="model family: linear (squared loss), logistic (binary, or multinomial for k > 2 class ids), poisson")
    p.add_argument("--l2", type=float, default=0.0, help="ridge penalty l2 * ||coef||^2 on the mean loss (default 0)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="output file; written atomically (temporary file + rename)")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar on stderr")


def _seed(args: argparse.Namespace) -> int:
    print(seed_example().report())
    return 0


def _network_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """The network demo's l2 (1e-3) unless --l2 was given."""
    if args.l2 == DEMO_L2:
        args.l2 = NETWORK_DEMO_L2
    return args


DEMO_L2, NETWORK_DEMO_L2 = 1e-2, 1e-3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="upweight",
        description="Exact influence functions for weighted GLMs: which training points help or hurt a prediction.",
    )
    parser.add_argument("--version", action="version", version=f"upweight {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="fit the bundled breast-cancer data and show the training points that most help and hurt the worst test predictions",
        description="Fit binary logistic regression to the bundled breast-cancer data (80/20 split), then for the "
        "worst-predicted test points list the training points whose upweighting most lowers (helps) and "
        "most raises (hurts) their loss, and check one against an exact refit.",
    )
    demo.add_argument("--l2", type=float, default=DEMO_L2, help="ridge penalty on the coefficients (default 0.01; 0.001 with --network)")
    demo.add_argument("--queries", type=int, default=3, help="how many worst-predicted test points to explain (default 3)")
    demo.add_argument("--top", type=int, default=5, help="how many helpful / harmful training points to list (default 5)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the train/test split (default 0)")
    demo.add_argument("--plots", metavar="DIR", default="upweight_demo",
                      help="folder for the PNG figures (response curve, leave-one-out scatter, digits gallery; "
                      "needs matplotlib; default upweight_demo); --plots '' skips them")
    demo.add_argument("--network", action="store_true",
                      help="instead: train a 64-16-10 tanh network on the bundled digits, show the training images that most "
                      "help and hurt a misclassified test image, and check them against the proximal Bregman response")
    demo.add_argument("--sample", type=int, default=20,
                      help="--network: random training points checked against the PBRF besides the listed ones (default 20)")
    demo.set_defaults(func=lambda a: run_network_demo(_network_defaults(a)) if a.network else run_demo(a))
    seed = sub.add_parser(
        "seed",
        help="print the three-point worked example (fitted line, influence, influence on each loss)",
        description="The worked example of the README: points (0,0), (1,1.5), (2,2), squared loss, y = m x + b.",
    )
    seed.set_defaults(func=_seed)

    fit = sub.add_parser(
        "fit",
        help="fit a weighted GLM and save it for `upweight score`",
        description="Fit a weighted GLM (Newton's method in the Rust core) and save its parameters to an .npz model file.",
    )
    _add_training_args(fit)
    fit.set_defaults(func=_fit)

    score = sub.add_parser(
        "score",
        help="score training points: top-k helpful/harmful per query, self-influence, or the full score matrix",
        description="Influence of every training point: --what top-k (per query, the K training points whose "
        "upweighting most lowers / raises its loss; streamed, memory O(block + q K)), --what self "
        "(self-influence of each training point), --what full (the q x n score matrix S[t, m]; "
        "negative = helpful), or --what loo-top-k (per query, the K training points whose removal "
        "would most raise / lower its loss, by one Newton step each: the predicted change of the loss "
        "when the point is left out, positive = helpful; streamed). The model comes from --model "
        "(see `upweight fit`) or is fitted here with --family/--l2.",
    )
    _add_training_args(score)
    score.add_argument("--model", metavar="FILE", help="a model saved by `upweight fit`")
    score.add_argument("--query", metavar="FILE", help="query (test) points: .npy, .npz, .csv or .parquet")
    score.add_argument("--query-y", metavar="FILE", help="query targets (.npy) when QUERY holds features only")
    score.add_argument("--what", choices=["top-k", "self", "full", "loo-top-k"], default="top-k", help="what to compute (default top-k)")
    score.add_argument("-k", "--k", type=int, default=10, help="how many helpful and harmful points per query (default 10)")
    score.add_argument("--solver", choices=list(INFLUENCE_SOLVERS), default="auto",
                       help="how to solve H v = g (default auto); arnoldi: approximate, from the top --rank eigenpairs of H")
    score.add_argument("--rank", type=int, default=None, metavar="R", help="with --solver arnoldi: the eigenpairs of H kept")
    score.add_argument("--arnoldi-inverse", choices=["projection", "exact"], default="projection",
                       help="with --solver arnoldi: invert within the top eigenspace (projection, default) or the exact "
                       "inverse of the rank-R model + damping I (needs --damping > 0)")
    score.add_argument("--damping", type=float, default=0.0, help="solve (H + damping I) v = g (default 0)")
    score.add_argument("--resume", action="store_true",
                       help="continue an interrupted top-k, loo-top-k or self run from its checkpoint OUTPUT.resume.npz (written after "
                       "every segment of training rows; the result equals an uninterrupted run's)")
    score.add_argument("--segment-rows", type=int, default=resume.DEFAULT_SEGMENT_ROWS, metavar="N",
                       help=f"training rows per checkpointed segment, a multiple of {BLOCK_ROWS} (default {resume.DEFAULT_SEGMENT_ROWS})")
    score.set_defaults(func=_score)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UpweightError as exc:
        print(f"upweight: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        ckpt = getattr(args, "output", None) and resume.checkpoint_path(args.output)
        if args.command == "score" and ckpt and os.path.exists(ckpt):
            print(f"\nupweight: interrupted; no output was written. Finished segments are in {ckpt}: "
                  "rerun the same command with --resume to continue", file=sys.stderr)
        else:
            print("\nupweight: interrupted; no output was written", file=sys.stderr)
        return 130
