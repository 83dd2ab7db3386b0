"""Choosing `auto`'s design on TUNING seeds only (100, 101, ...): out-of-fold evidence.

For each case (the same data, split and training masks as benchmarks/auto.py builds for a
seed), this runs `auto`'s inner cross-validation on the *training* part of a tuning seed
(the reported seeds 0-4 are never used here) and compares ways of building the ensemble from
the out-of-fold predictions, scored on rows the choice did not see: the out-of-fold rows are
split in two halves (stratified, several repeats), the ensemble is chosen on one half and
scored on the other, and the other way round. Nothing here reads a test split.

Compared:
* ``global``: one weight per member for every presence pattern (Caruana selection);
* ``by-count``: Caruana selection per number of present modalities, falling back to the
  global weights for a group with fewer than ``MIN_GROUP`` rows.
* ``bagged`` / ``bagged75``: the selection from a random half / three quarters of the
  members, 20 bags, weights averaged (Caruana et al. 2004, section 4.3);
* ``anchored``: bagged, but every bag holds the member with the lowest log loss;
* ``dominant``: ``anchored`` when that member leads the runner-up by ``DOMINANCE_Z``
  standard errors of their per-row log-loss difference, else ``bagged``;
* ``gated-anchored`` / ``gated-dominant``: ``anchored`` / ``dominant`` when the choice sees at
  least ``ANCHOR_MIN_ROWS`` rows, else ``bagged`` (the fifth round's G and GD);
* ``gated-dominant-accurate``: ``gated-dominant``, but anchored only when the dominant member's
  accuracy on the choosing rows is also the highest of all candidates, a tie counting as
  highest (the seventh round's DA);
* ``tempered-<scheme>``: each member's probabilities tempered (Guo et al., ICML 2017) with a
  temperature fitted on the rows the choice sees, then ``<scheme>`` on the tempered ones;
* ``top1`` / ``top3``: the best member alone / the best three, equal weights;
* ``best-or-bagged``: the bagged ensemble or the best member, whichever scores the lower log
  loss when chosen on one half of the rows it is given and scored on the other;
* on synthetic data, the Bayes rule itself and the Bayes rule with class means estimated on
  the training folds (what estimating the means alone costs);
* extra candidates, added to the portfolio: their out-of-fold predictions are computed the
  same way (same folds) and the comparison is repeated with them in the library
  (``--variants`` names several such portfolios, each scored with every ``--schemes``;
  ``--variant-min-rows`` admits a variant's extra member only where the training part holds
  at least so many samples, e.g. ``'{"KG": {"per-modality-kernel[C=30.0]": 500}}'``, the
  seventh round's KG).

Run:  python benchmarks/auto_tuning.py --seeds 100,101 --cases hw07,hw05,small,syn1000
      (``--gated`` compares portfolios with the samples-per-feature gated lda-em members;
      ``--rule`` applies an adoption rule to the results; ``--without-kernel`` leaves the
      kernel member out of the default portfolio, as before ``AUTO_REVISION`` 5: the recorded
      commands of rounds 1-7, which ran before it joined, reproduce with it; an ``--extra``
      member already in the default portfolio is refused)
Writes <out>/auto_tuning.{json,md} (``--name``) with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write_report  # noqa: E402

from mlmm.data.missingness import parse_condition, simulate  # noqa: E402
from mlmm.experiment import make_split, resolve_dataset  # noqa: E402
from mlmm.methods.combination.auto_ensemble import member_label  # noqa: E402
from mlmm.tune import auto as A  # noqa: E402
from mlmm.utils import rng_for  # noqa: E402

CASES = {
    "hw07": ("handwritten", {}, "mcar:0.7", 0.2),
    "hw05": ("handwritten", {}, "mcar:0.5", 0.2),
    "small": ("handwritten", {}, "mcar:0.3:unit=samples", 0.9),
    "syn1000": ("synthetic", {"n_samples": 11000}, "mcar:0.5", 10000 / 11000),
    # benchmarks/auto.py's small synthetic part: 300 training samples of SMALL["synthetic"],
    # test_size computed as its run("small", ...) computes it (the ninth round's fifth case)
    "syn300": ("synthetic", {"n_samples": 10300}, "mcar:0.3:unit=samples", 1 - 300 / 10300),
}


def training_part(case: str, seed: int):
    """The training part (train and validation rows together) with its training masks,
    exactly as ``run_experiment(..., "auto")`` builds it."""
    dataset, params, missing, test_size = CASES[case]
    _, data = resolve_dataset(dataset, params)
    split, _ = make_split(data, "random", seed, test_size, 0.1)
    rows = np.sort(np.concatenate([split.indices["train"], split.indices["val"]]))
    train = data.subset(rows)
    train, _ = simulate(train, parse_condition(missing).train, rng_for(seed, "train-mask"))
    return train


def oof_library(train, seed: int, budget: str, cache_dir: Path, members: list | None) -> list[dict]:
    """Out-of-fold predictions of the default portfolio (``members=None``) or of ``members``,
    on the folds ``fit_auto`` uses (and through its fold cache)."""
    settings = dict(A._budget(budget))
    if train.n_samples >= A.LARGE_DATA:
        settings["folds"] = min(settings["folds"], 3)
    if members is None:
        candidates, _ = A.default_portfolio(train, budget)
    else:
        candidates = [A._as_member(m, train.n_samples) for m in members]
    trainer_args = {"batch_size": 64, "lr": 1e-3, "device": "cpu", "seed": seed}
    fit_settings = {k: settings[k] for k in ("folds", "max_epochs", "patience")}
    cache = A._Cache(cache_dir, A._fingerprint(train), {**fit_settings, **trainer_args})
    splits = A._folds(train, settings["folds"], seed)
    out = []
    with A._Progress(False, 0) as bar:
        for member in candidates:
            r = A._cross_validate(
                member, train, splits, settings, trainer_args, cache, bar, None, None
            )
            if r["oof"] is not None:
                out.append(r)
            print(f"  {r['model']}: {r['seconds']:.0f}s {r['note']}", flush=True)
    return out


def bayes_oof(train) -> np.ndarray | None:
    """The Bayes-optimal posterior on the training rows under their masks (synthetic only)."""
    generator = train.meta.get("generator")
    if generator is None:
        return None
    return np.exp(generator.log_posterior(train.inputs, train.observed))


def estimated_means_oof(train, seed: int, budget: str) -> np.ndarray | None:
    """The Bayes rule with the true (isotropic) noise but class means estimated on the
    training folds (from the rows where each modality is present), out of fold on the folds
    ``fit_auto`` uses (synthetic only). Its gap to :func:`bayes_oof` is what estimating the
    class means alone costs."""
    generator = train.meta.get("generator")
    if generator is None:
        return None
    from mlmm.data.datasets.synthetic import SyntheticGenerator

    settings = dict(A._budget(budget))
    if train.n_samples >= A.LARGE_DATA:
        settings["folds"] = min(settings["folds"], 3)
    oof = np.zeros((train.n_samples, generator.n_classes))  # [N, K]
    for fit_rows, held_rows in A._folds(train, settings["folds"], seed):
        means = {}
        for j, name in enumerate(generator.modality_names):
            x = np.asarray(train.inputs[name], dtype=np.float64)[fit_rows]  # [n, D]
            seen = train.observed[fit_rows, j]
            y = train.targets[fit_rows]
            means[name] = np.stack(
                [x[seen & (y == k)].mean(axis=0) for k in range(generator.n_classes)]
            )  # [K, D]
        fitted = SyntheticGenerator(generator.modality_names, means, generator.noise_std)
        held = {name: np.asarray(v)[held_rows] for name, v in train.inputs.items()}
        oof[held_rows] = np.exp(fitted.log_posterior(held, train.observed[held_rows]))
    return oof


def group_keys(observed: np.ndarray, scheme: str) -> np.ndarray:
    if scheme == "by-count":
        return observed.sum(1)
    if scheme == "by-pattern":
        return observed @ (1 << np.arange(observed.shape[1]))
    return np.zeros(len(observed), dtype=np.int64)


#: The bounds of a member's temperature (:func:`fit_temperature`).
TEMPERATURE_RANGE = (0.05, 20.0)


def temper(proba, temperature):
    """Class probabilities ``[N, K]`` at ``temperature``: ``softmax(log(proba) / T)``
    (temperature scaling, Guo et al., "On Calibration of Modern Neural Networks", ICML 2017);
    every row's most probable class stays the same."""
    logits = np.log(np.clip(np.asarray(proba, dtype=np.float64), A._EPS, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)  # [N, K]
    odds = np.exp(logits)
    return odds / odds.sum(axis=1, keepdims=True)


def fit_temperature(proba, y):
    """The temperature within :data:`TEMPERATURE_RANGE` minimising the mean log loss of
    ``temper(proba, T)`` on ``y`` (a bounded 1-D search on ``log T``)."""
    from scipy.optimize import minimize_scalar

    low, high = np.log(TEMPERATURE_RANGE)
    result = minimize_scalar(
        lambda log_t: A._loss(temper(proba, float(np.exp(log_t))), y, True),
        bounds=(float(low), float(high)),
        method="bounded",
    )
    return float(np.exp(result.x))


def bag(rng, preds, y, size, anchored):
    """The members of one bag: ``size`` drawn at random, or (``anchored``) the one with the
    lowest log loss on ``y`` and ``size - 1`` drawn at random from the others."""
    if not anchored:
        return np.sort(rng.choice(len(preds), size=size, replace=False))
    best = int(np.argmin([A._loss(p, y, True) for p in preds]))
    others = np.array([i for i in range(len(preds)) if i != best])
    return np.sort(np.append(rng.choice(others, size=size - 1, replace=False), best))


def bagged_selection(preds, y, rounds, bags=20, share=0.5, seed=0, anchored=False):
    """Caruana et al. (2004, section 4.3): selection from a random half of the models, in
    ``bags`` repeats, the weights averaged; ``anchored``: every bag holds the member with the
    lowest log loss on ``y`` (:func:`bag`).

    The prototype of :func:`mlmm.tune.auto.bagged_ensemble_selection` (same algorithm, its own
    seed stream), kept as it was so that the recorded ``auto_tuning`` results reproduce."""
    rng = np.random.default_rng(seed)
    total = np.zeros(len(preds))
    size = max(1, round(share * len(preds)))
    for _ in range(bags):
        pick = bag(rng, preds, y, size, anchored)
        w = A.ensemble_selection([preds[i] for i in pick], y, True, rounds)
        total[pick] += w
    return (total / bags).tolist()


def best_or_bagged(preds, y, rounds, repeats=2):
    """The bagged ensemble or the single best member, whichever has the lower log loss when
    chosen on one half of these rows and scored on the other (both ways, ``repeats`` times);
    the winner is then chosen on all of them."""
    from sklearn.model_selection import StratifiedKFold

    ens, one = [], []
    for r in range(repeats):
        for a, b in StratifiedKFold(2, shuffle=True, random_state=100 + r).split(y, y):
            w = bagged_selection([p[a] for p in preds], y[a], rounds)
            ens.append(A._loss(sum(wj * p[b] for wj, p in zip(w, preds, strict=True)), y[b], True))
            best = int(np.argmin([A._loss(p[a], y[a], True) for p in preds]))
            one.append(A._loss(preds[best][b], y[b], True))
    if np.mean(one) < np.mean(ens):
        w = np.zeros(len(preds))
        w[int(np.argmin([A._loss(p, y, True) for p in preds]))] = 1.0
        return w.tolist()
    return bagged_selection(preds, y, rounds)


#: ``dominant``: the bags are anchored when the best member's lead is this many standard errors;
#: ``gated-*`` (fifth round): they may be anchored only from this many selection rows on. The
#: fifth round fixed these values and ``fit_auto`` adopted them (:mod:`mlmm.tune.auto`).
DOMINANCE_Z = A.DOMINANCE_Z
ANCHOR_MIN_ROWS = A.ANCHOR_MIN_ROWS


def dominance_z(preds, y):
    """How many standard errors the member with the lowest log loss on ``y`` leads the
    runner-up by (:func:`mlmm.tune.auto.dominance`, the statistic ``fit_auto`` anchors on)."""
    return A.dominance(preds, y)[1]


def most_accurate(preds, y, member):
    """Whether ``member``'s accuracy on ``y`` is the highest of all candidates (a tie counts as
    highest): the seventh round's DA anchors only on such a member."""
    accuracies = [int((p.argmax(1) == y).sum()) for p in preds]
    return accuracies[member] >= max(accuracies)


#: The schemes that anchor their bags on a condition (recorded per choosing part).
DOMINANT_SCHEMES = ("dominant", "gated-dominant", "gated-dominant-accurate")


def anchors(scheme, preds, y):
    """Whether ``scheme`` anchors its bags on the member with the lowest log loss on ``y``."""
    if scheme == "anchored":
        return True
    if scheme == "gated-anchored":
        return len(y) >= ANCHOR_MIN_ROWS
    if scheme not in DOMINANT_SCHEMES:
        return False
    if scheme != "dominant" and len(y) < ANCHOR_MIN_ROWS:
        return False
    best, z = A.dominance(preds, y)
    if z < DOMINANCE_Z:
        return False
    return scheme != "gated-dominant-accurate" or most_accurate(preds, y, best)


def grouped_weights(preds, y, keys, rounds, min_group, scheme="global"):
    """Global Caruana weights plus one set per group key with >= min_group rows."""
    if scheme == "bagged":
        return bagged_selection(preds, y, rounds), {}
    if scheme in ("anchored", "gated-anchored", *DOMINANT_SCHEMES):
        return bagged_selection(preds, y, rounds, anchored=anchors(scheme, preds, y)), {}
    if scheme == "bagged75":
        return bagged_selection(preds, y, rounds, share=0.75), {}
    if scheme == "best-or-bagged":
        return best_or_bagged(preds, y, rounds), {}
    if scheme.startswith("top"):
        losses = np.array([A._loss(p, y, True) for p in preds])
        w = np.zeros(len(preds))
        w[np.argsort(losses)[: int(scheme[3:])]] = 1.0
        return (w / w.sum()).tolist(), {}
    glob = A.ensemble_selection(preds, y, True, rounds)
    per = {}
    for k in np.unique(keys):
        rows = keys == k
        if rows.sum() >= min_group:
            per[int(k)] = A.ensemble_selection([p[rows] for p in preds], y[rows], True, rounds)
    return glob, per


def mix(preds, keys, glob, per):
    out = np.zeros_like(preds[0])
    for i in range(len(preds[0])):
        w = per.get(int(keys[i]), glob)
        out[i] = sum(wj * p[i] for wj, p in zip(w, preds, strict=True))
    return out


def cross_fit(preds, y, observed, scheme, rounds, min_group, repeats=5, halves=None, folds=2):
    """Choose on one half of the out-of-fold rows, score on the other (both ways, repeated).
    With ``folds=k``: choose on k-1 of k stratified folds, score on the k-th (every way); the
    "halves" below are then the k choosing parts.

    ``tempered-<scheme>``: each member's temperature is fitted on the choosing half
    (:func:`fit_temperature`), both halves are tempered with it, and ``<scheme>`` chooses the
    weights on the tempered choosing half. If a list ``halves`` is given, one dict per choosing
    half is appended to it: the temperatures (tempered schemes), and the member with the
    lowest log loss on the choosing half, that loss, its loss on the other half and its weight
    (and, for the ``dominant`` schemes, the dominance statistic on the choosing half, whether
    that member is also the most accurate there, and whether the bags were anchored).
    """
    from sklearn.model_selection import StratifiedKFold

    tempered = scheme.startswith("tempered-")
    scheme = scheme.removeprefix("tempered-")
    keys = group_keys(observed, scheme)
    acc, loss = [], []
    for r in range(repeats):
        for a, b in StratifiedKFold(folds, shuffle=True, random_state=r).split(y, y):
            pa, pb = [p[a] for p in preds], [p[b] for p in preds]
            if tempered:
                fitted = [fit_temperature(p, y[a]) for p in pa]
                pa = [temper(p, t) for p, t in zip(pa, fitted, strict=True)]
                pb = [temper(p, t) for p, t in zip(pb, fitted, strict=True)]
            glob, per = grouped_weights(pa, y[a], keys[a], rounds, min_group, scheme)
            if halves is not None:
                best = int(np.argmin([A._loss(p, y[a], True) for p in pa]))
                halves.append(
                    {
                        "temperatures": fitted if tempered else None,
                        "best": best,
                        "best_loss_choosing": A._loss(pa[best], y[a], True),
                        "best_loss_other": A._loss(pb[best], y[b], True),
                        "best_weight": glob[best],
                        "dominance_z": (
                            dominance_z(pa, y[a]) if scheme in DOMINANT_SCHEMES else None
                        ),
                        "most_accurate": most_accurate(pa, y[a], best),
                        "anchored": anchors(scheme, pa, y[a]),
                    }
                )
            m = mix(pb, keys[b], glob, per)
            acc.append(float((m.argmax(1) == y[b]).mean()))
            loss.append(A._loss(m, y[b], True))
    return 100 * float(np.mean(acc)), float(np.mean(loss))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="100,101")
    parser.add_argument("--cases", default="hw07,hw05,small,syn1000")
    parser.add_argument("--budget", default="medium")
    parser.add_argument("--extra", default="[]", help="extra portfolio members (JSON list)")
    parser.add_argument(
        "--variants",
        default="{}",
        help="portfolios to compare (JSON): name -> labels of --extra members added to the "
        "default portfolio, each scored with every --schemes ensemble scheme",
    )
    parser.add_argument(
        "--gated",
        default="{}",
        help="portfolios to compare (JSON): name -> shrinkage values of the gated diagonal "
        "lda-em members (mlmm.tune.auto.DIAGONAL_LDA_SHRINKAGES), each portfolio built by "
        "default_portfolio itself, so its samples-per-feature gate applies; the baseline is "
        "the portfolio without them. Scored with every --schemes ensemble scheme",
    )
    parser.add_argument(
        "--schemes",
        default="bagged,bagged75,global,best-or-bagged,top1",
        help="ensemble schemes: bagged, bagged75, anchored (every bag holds the best member), "
        "dominant, gated-anchored, gated-dominant (anchored / dominant from ANCHOR_MIN_ROWS "
        "selection rows on), gated-dominant-accurate (gated-dominant, anchored only on a member "
        "that is also the most accurate), global, best-or-bagged, top1, top3; a 'tempered-' "
        "prefix first fits each member's temperature on the choosing half",
    )
    parser.add_argument(
        "--variant-min-rows",
        default="{}",
        help="gates on --variants members (JSON): variant -> {member label: training samples}; "
        "that variant holds the member only where the training part has at least that many "
        "samples (elsewhere it is the default portfolio's)",
    )
    parser.add_argument(
        "--rule",
        default="{}",
        help="an adoption rule to apply (JSON): {'baseline': [variant, scheme], 'candidates': "
        "{name: [variant, scheme], ...}} in order of preference; the candidate with the lowest "
        "mean log-loss ratio to the baseline over the cases is adopted if that mean is below 1, "
        "no case rises by more than 1 %%, the mean accuracy does not fall, ties within 'tie' "
        "(default 0.002) going to the earlier one",
    )
    parser.add_argument(
        "--crossfit-folds",
        type=int,
        default=2,
        help="choose the ensemble on k-1 of k folds of the out-of-fold rows and score it on the "
        "k-th (default 2: two halves, as in every round so far)",
    )
    parser.add_argument(
        "--without-kernel",
        action="store_true",
        help="the default portfolio without mlmm.tune.auto.KERNEL_MEMBER, as before it joined "
        "(the seventh round): the earlier rounds' commands reproduce with it",
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--name", default="auto_tuning", help="writes <out>/<name>.{json,md}")
    args = parser.parse_args()
    if args.without_kernel:
        A.KERNEL_MIN_SAMPLES = float("inf")
    variants = json.loads(args.variants)
    min_rows = json.loads(args.variant_min_rows)
    for name, gates in min_rows.items():
        if name not in variants or not set(gates) <= set(variants[name]):
            raise SystemExit(
                f"--variant-min-rows gates {name!r}: {sorted(gates)}, which must be members of "
                f"that --variants portfolio ({variants.get(name)})"
            )
    gated = json.loads(args.gated)
    seeds = [int(s) for s in args.seeds.split(",")]
    if any(s < 100 for s in seeds):
        raise SystemExit("tuning seeds only (>= 100): the reported seeds 0-4 choose nothing")
    out = Path(args.out)
    extra = json.loads(args.extra)
    k = args.crossfit_folds
    if k < 2:
        raise SystemExit(f"--crossfit-folds must be at least 2, got {k}")
    rule = json.loads(args.rule)
    if rule:  # before the run: a rule it cannot apply would end it without writing anything
        check_rule(rule, variants, args.schemes.split(","))
    t0 = time.perf_counter()
    rows = []
    for case in args.cases.split(","):
        for seed in seeds:
            train = training_part(case, seed)
            extra_rows: list[dict] = []
            print(f"{case} seed {seed}: {train.n_samples} training samples", flush=True)
            cache = out / "auto-runs" / "tuning-cache"
            if gated:  # the baseline: the portfolio without the gated members
                A.DIAGONAL_LDA_SHRINKAGES = ()
            base = oof_library(train, seed, args.budget, cache, None)
            portfolios = {}
            for name, shrinkages in gated.items():
                A.DIAGONAL_LDA_SHRINKAGES = tuple(float(v) for v in shrinkages)
                portfolios[name] = oof_library(train, seed, args.budget, cache, None)
            if gated:
                seen = {r["model"] for r in base}
                for members in portfolios.values():
                    for r in members:
                        if r["model"] not in seen:
                            seen.add(r["model"])
                            extra_rows.append(r)
            check_extra(extra, base, train.n_samples, case)
            lib = base + (oof_library(train, seed, args.budget, cache, extra) if extra else [])
            y = train.targets
            rounds = A._budget(args.budget)["rounds"]

            def add(model, scheme, min_group, acc, loss, case=case, seed=seed, **more):
                rows.append(
                    {
                        "case": case,
                        "seed": seed,
                        "model": model,
                        "scheme": scheme,
                        "min_group": min_group,
                        "oof_accuracy": acc,
                        "oof_log_loss": loss,
                        **more,
                    }
                )
                print(f"  {model} {scheme}/{min_group}: {acc:.2f} {loss:.4f}", flush=True)

            def add_member(model, proba, y=y):
                if proba is not None:
                    accuracy = 100 * float((proba.argmax(1) == y).mean())
                    add(model, "member", None, accuracy, A._loss(proba, y, True))

            for r in lib + extra_rows:
                add_member(r["model"], r["oof"])
            add_member("bayes-optimal", bayes_oof(train))
            add_member(
                "bayes rule, estimated class means", estimated_means_oof(train, seed, args.budget)
            )
            schemes = [("global", 0), ("by-count", 100), ("by-count", 200), ("bagged", 0)]
            schemes += [("top1", 0), ("top3", 0)]
            for name, members in ({"current": base, **portfolios} if gated else {}).items():
                for scheme in args.schemes.split(","):
                    acc, loss = cross_fit(
                        [r["oof"] for r in members], y, train.observed, scheme, rounds, 0, folds=k
                    )
                    add(f"ensemble ({name}, {len(members)} members)", scheme, 0, acc, loss)
            for scheme, min_group in schemes if not (variants or gated) else ():
                acc, loss = cross_fit(
                    [r["oof"] for r in base], y, train.observed, scheme, rounds, min_group, folds=k
                )
                add("ensemble (default portfolio)", scheme, min_group, acc, loss)
            for scheme in ("global", "bagged", "top3") if extra and not variants else ():
                acc, loss = cross_fit(
                    [r["oof"] for r in lib], y, train.observed, scheme, rounds, 0, folds=k
                )
                add("ensemble (default portfolio + extra)", scheme, 0, acc, loss)
            for name, labels in variants.items():
                unknown = set(labels) - {r["model"] for r in lib}
                if unknown:
                    raise SystemExit(
                        f"variant {name!r} names {sorted(unknown)}, not in the library"
                    )
                gates = min_rows.get(name, {})
                admitted = {m for m in labels if train.n_samples >= gates.get(m, 0)}
                chosen = base + [r for r in lib[len(base) :] if r["model"] in admitted]
                for scheme in args.schemes.split(","):
                    halves: list[dict] = []
                    acc, loss = cross_fit(
                        [r["oof"] for r in chosen],
                        y,
                        train.observed,
                        scheme,
                        rounds,
                        0,
                        5,
                        halves,
                        k,
                    )
                    fitted = [h["temperatures"] for h in halves if h["temperatures"] is not None]
                    # each member's fitted temperatures over the halves: min, median, max
                    spread = (
                        {
                            r["model"]: [round(float(f(t)), 3) for f in (np.min, np.median, np.max)]
                            for r, t in zip(chosen, np.array(fitted).T, strict=True)
                        }
                        if fitted
                        else None
                    )
                    more = {"temperatures": spread} if fitted else {}
                    more["members"] = [r["model"] for r in chosen]
                    # per choosing half: the best member there, its loss there and on the
                    # other half, and its weight (the dominant schemes: the dominance
                    # statistic, whether that member is also the most accurate there, and
                    # whether the bags were anchored)
                    more["best_per_half"] = [
                        [
                            chosen[h["best"]]["model"],
                            round(h["best_loss_choosing"], 4),
                            round(h["best_loss_other"], 4),
                            round(h["best_weight"], 3),
                        ]
                        + (
                            [round(h["dominance_z"], 2), h["most_accurate"], h["anchored"]]
                            if h["dominance_z"] is not None
                            else []
                        )
                        for h in halves
                    ]
                    if any(h["dominance_z"] is not None for h in halves):
                        more["anchored_parts"] = sum(h["anchored"] for h in halves)
                    # on all the out-of-fold rows (the halves vary)
                    if scheme in DOMINANT_SCHEMES:
                        every = [r["oof"] for r in chosen]
                        more["dominance_z"] = dominance_z(every, y)
                        more["most_accurate"] = most_accurate(every, y, A.dominance(every, y)[0])
                    add(f"ensemble ({name})", scheme, 0, acc, loss, **more)
    frame = pd.DataFrame(rows)
    summary = (
        frame.groupby(["case", "model", "scheme", "min_group"], dropna=False)
        .agg(
            oof_accuracy=("oof_accuracy", "mean"),
            oof_log_loss=("oof_log_loss", "mean"),
            seeds=("seed", "count"),
        )
        .reset_index()
        .round(4)
    )
    record = {
        "command": "python benchmarks/auto_tuning.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "wall_seconds": time.perf_counter() - t0,
        "summary": summary.to_dict(orient="records"),
        "rows": rows,
    }
    checks = apply_rule(frame, rule) if rule else {}
    record["rule"] = checks
    print(summary.to_string())
    write_report(
        out,
        args.name,
        "auto design choices on tuning seeds (out-of-fold)",
        "Cross-fitted out-of-fold accuracy % and log loss on the training parts of "
        "tuning seeds; no test split is read.",
        record,
        summary,
        checks,
    )


def check_extra(extra: list, base: list[dict], n_samples: int, case: str) -> None:
    """Exit with one line if an ``--extra`` member is already in the default portfolio
    ``base``: every variant would hold it twice and the baseline would hold it too (since
    ``AUTO_REVISION`` 5 the default portfolio holds ``mlmm.tune.auto.KERNEL_MEMBER`` from
    ``KERNEL_MIN_SAMPLES`` training samples on)."""
    have = {r["model"] for r in base}
    labels = {member_label(A._as_member(m, n_samples)) for m in extra}
    twice = sorted(labels & have)
    if twice:
        raise SystemExit(
            f"--extra members {twice} are already in the default portfolio of case {case!r} "
            f"({n_samples} training samples); leave them out of --extra, or pass "
            f"--without-kernel to score the portfolio from before the kernel member joined"
        )


def check_rule(rule: dict, variants: dict, schemes: list[str]) -> None:
    """Exit with one line unless ``rule`` (see ``--rule``) has a baseline and candidates, each
    a ``[variant, scheme]`` pair naming a ``--variants`` portfolio and a ``--schemes`` scheme."""
    candidates = rule.get("candidates") if isinstance(rule, dict) else None
    pairs = [rule.get("baseline"), *candidates.values()] if isinstance(candidates, dict) else [rule]
    for pair in pairs:
        named = isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, str) for v in pair)
        if named and pair[0] in variants and pair[1] in schemes:
            continue
        raise SystemExit(
            f"--rule needs a 'baseline' and 'candidates', each [variant, scheme] with a "
            f"--variants portfolio ({', '.join(variants) or 'none given'}) and a --schemes "
            f"scheme ({', '.join(schemes)}); got {pair!r}"
        )


def apply_rule(frame: pd.DataFrame, rule: dict) -> dict:
    """Score ``rule``'s candidates against its baseline (see ``--rule``): per candidate its
    per-case log-loss ratios (means over the seeds), their mean, the largest rise and the mean
    accuracy, and which candidate the rule adopts (or none)."""
    means = frame.groupby(["model", "scheme", "case"])[["oof_log_loss", "oof_accuracy"]].mean()

    def scores(variant: str, scheme: str) -> pd.DataFrame:
        return means.loc[(f"ensemble ({variant})", scheme)]

    base = scores(*rule["baseline"])
    checks: dict = {
        "baseline": f"{rule['baseline']}: mean accuracy {base['oof_accuracy'].mean():.3f}"
    }
    eligible = []
    for name, (variant, scheme) in rule["candidates"].items():
        own = scores(variant, scheme).loc[base.index]
        ratio = own["oof_log_loss"] / base["oof_log_loss"]
        mean, accuracy = float(ratio.mean()), float(own["oof_accuracy"].mean())
        ok = mean < 1 and ratio.max() <= 1.01 and accuracy >= base["oof_accuracy"].mean()
        per_case = ", ".join(f"{case} {v:.4f}" for case, v in ratio.items())
        checks[name] = (
            f"{variant}/{scheme}: ratios {per_case}; mean {mean:.4f}; mean accuracy "
            f"{accuracy:.3f}; {'eligible' if ok else 'not eligible'}"
        )
        if ok:
            eligible.append((name, mean))
    adopted = None
    if eligible:
        lowest = min(mean for _, mean in eligible)
        tie = float(rule.get("tie", 0.002))
        adopted = next(name for name, mean in eligible if mean <= lowest + tie)
    checks["adopted"] = adopted or "nothing"
    return checks


if __name__ == "__main__":
    main()
