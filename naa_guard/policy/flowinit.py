"""The policy text ``naa-guard init`` writes for a flow-matching model (SD3 / SD3.5, Flux): the rectified-flow scan.

The member / non-member gap of the flow-matching loss is bell-shaped over the path time s
(arXiv 2606.07271, "Where Rectified Flows Leak"): small near s = 0 (the noise is barely visible,
every image is equally hard) and near s = 1 (the image is gone), largest between. Where the peak
sits depends on the model, so init lists the loss at several s as TUNED candidates (SPEC section 6):
the audit scores each on a calibration split (``tune.fraction`` of each side), keeps the one
that leaks most and gates it on the rest, never chosen on the images it reports. SimA and PIA get
short scans of their own s. Attack timestep t means s = t / 1000 on flow targets.

Where the candidates come from (never from an evaluation split):

- SPEC section 3b, held-back flow models: loss peaks at s = 0.2-0.3 and is weakest at the ends
  (s = 0.05: 0.924, s = 0.2: 0.976, s = 0.7: 0.845 on an SD3-style fine-tune; a LoRA's peak at
  s = 0.3); SimA best at s = 0-0.01; PIA at s = 0.2-0.5.
- ``benchmarks/bench_flow_scan.py`` on the tiny fixtures (``tests/tiny_flow.py``; 32 v 32, the
  transformer fine-tuned 1500 steps on the members): loss AUC by s = 0 / 0.05 / 0.1 / 0.2 / 0.3 /
  0.5 / 0.7 / 0.9: SD3 0.63 / 0.61 / 0.70 / 0.71 / 0.66 / 0.56 / 0.51 / 0.47, Flux 0.76 / 0.78 /
  0.89 / 0.94 / 0.91 / 0.80 / 0.68 / 0.61 (the bell, peak at s = 0.2); SimA best at s = 0.1 there
  (0.73 / 0.94), PIA at s = 0.1 / 0.3 (0.84 / 0.99), NAA (s = 0.08) 0.80 / 0.82. The memorising
  model of tests/test_flow.py gives loss AUC 1.0 for s = 0.01-0.3, 0.98 at 0.5, 0.67 at 0.7. With
  ``--seed 1`` (a weaker fit) the loss peak moves to s = 0.3 on SD3 (0.58) and 0.1 on Flux (0.59), PIA's
  best is s = 0.3 (0.84 / 0.73), SimA's 0.72 / 0.75 at s = 0-0.1: the peak moves with the model, so s is scanned.

A set too small for a calibration split gets one setting per attack at the peaks above.
"""

from __future__ import annotations

from naa_guard.targets.flow_info import FLUX_GUIDANCE, T5_TOKENS

SCAN_FRACTION = 0.2  # tune.fraction init writes: the share of each side the candidates are chosen on
LOSS_SCAN = (50, 100, 200, 300, 500, 700)  # s = 0.05 ... 0.7 around the bell's peak
SIMA_SCAN = (0, 10, 50, 100)  # s = 0 ... 0.1: the clean input at a small s
PIA_SCAN = (100, 200, 300, 500)  # s = 0.1 ... 0.5
SINGLE = {"loss": 200, "sima": 10, "pia": 300}  # without a scan: the held-back peaks (loss s = 0.2, SimA s = 0.01, PIA s = 0.3)


def calibration_part(count: int) -> int:
    """Return the samples of a side of ``count`` the tuning split puts in the calibration part (as naa_guard.tuning splits)."""
    return int(round(SCAN_FRACTION * count))


def scan_fits(count: int, min_calibration: int, min_evaluation: int) -> bool:
    """Return True when a side of ``count`` splits into a calibration part the tuning accepts and an evaluation part a gate needs."""
    return calibration_part(count) >= min_calibration and count - calibration_part(count) >= min_evaluation


def _listed(values: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(value) for value in values) + "]"


def flow_attack_lines(scan: bool, min_calibration: int, min_evaluation: int) -> list[str]:
    """Return the attacks block (and the tune section) for a flow model; ``scan``: both sides split (:func:`scan_fits`)."""
    smallest = next(n for n in range(1, 100_000) if scan_fits(n, min_calibration, min_evaluation))
    head = [
        "attacks:               # flow matching (SPEC 3b): attack timestep t means s = t / 1000 on x_s = (1 - s) z0 + s e",
        "  # The rectified-flow scan: the members' / non-members' loss gap is bell-shaped over s (arXiv 2606.07271), weakest",
        "  # near s = 0 and s = 1; its peak depends on the model (held-back fine-tunes: s = 0.2-0.3; the tiny fixtures: 0.2,",
        "  # benchmarks/bench_flow_scan.py).",
    ]
    if not scan:
        return head + [
            f"  # A scan lists candidates chosen on a calibration split: it needs at least {smallest} members and {smallest} non-members",
            f"  # (tune.fraction {SCAN_FRACTION:g} of each side, at least {min_calibration}, for the choice; the rest to gate). With fewer, one setting each:",
            f"  loss: {{t: {SINGLE['loss']}}}        # 1 query: the flow-matching loss at s = {SINGLE['loss'] / 1000:g}, the held-back peak",
            f"  sima: {{t: {SINGLE['sima']}}}         # 1 query: e_hat at the clean latent, s = {SINGLE['sima'] / 1000:g} (held-back best: s = 0-0.01)",
            f"  pia: {{t: {SINGLE['pia']}}}         # 2 queries: the deterministic noise, then s = {SINGLE['pia'] / 1000:g} (held-back: s = 0.2-0.5)",
            "  naa: {}              # 5 queries along the Euler path of the flow ODE, s = 0.08 down to 0.04",
        ]
    return head + [
        "  # Each list is a set of TUNED candidates: the audit scores them on the calibration split (tune.fraction of each",
        "  # side), keeps the one that leaks most and gates it, under the attack's own name, on the rest: never chosen on the",
        "  # images it reports. Candidates cost queries on the calibration part (and on the rest only to settle a tie).",
        f"  loss: {{t: {_listed(LOSS_SCAN)}}}   # 1 query: the flow-matching loss at s = 0.05 ... 0.7",
        f"  sima: {{t: {_listed(SIMA_SCAN)}}}              # 1 query: e_hat at the clean latent, small s (held-back best: s = 0-0.01)",
        f"  pia: {{t: {_listed(PIA_SCAN)}}}           # 2 queries: the deterministic noise, then s (held-back best: s = 0.2-0.5)",
        "  naa: {}                                    # 5 queries along the Euler path of the flow ODE, s = 0.08 down to 0.04",
        "tune:",
        f"  fraction: {SCAN_FRACTION:g}        # share of each side the candidates are chosen on; the gates below are set for the rest",
    ]


def flow_model_lines(family: str, t5: bool, guidance_embeds: bool) -> list[str]:
    """Return the commented model.max_sequence_length / model.guidance keys, at the pipeline's defaults."""
    tokens = T5_TOKENS[family]
    where = "" if t5 else " (no T5 here: the pipeline feeds this many zero tokens)"
    lines = [
        f"  # max_sequence_length: {tokens}   # T5 tokens per prompt{where}, AS IN TRAINING (default {tokens};",
        "  #                            # SD3 DreamBooth trains with 77, Flux schnell with 256): another length weakens every attack",
    ]
    if guidance_embeds:
        lines.append(f"  # guidance: {FLUX_GUIDANCE:g}              # the guidance-distilled transformer's guidance input, as in training (default {FLUX_GUIDANCE:g})")
    return lines
