"""An in-domain Frechet distance of a model's prior samples to a dataset's test images (FID's formula, not
its network): the Inception network of published FIDs is not at hand, so the features are those of a small
classifier that twinvae trains itself on the dataset's training set, a numpy MLP (flattened image -> 256 ->
128 -> classes, ReLU, float32, minibatch Adam), deterministic from its seed: its initial weights and its
batch order come from vae_core.seeds' 'init' and 'data' streams, and the SHA-256 of its weights names it.
The distance between two sets of images is that of Gaussians fitted to their 128 penultimate activations,
||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) (Heusel et al. 2017). A figure is comparable only with
another of the same dataset and classifier (its SHA-256), never with a published FID. The floor is the
distance of the test set to as many training images: what real images of the domain score.

The classifier and both reference sets are the dataset's own grey images, also where a model was trained
and is evaluated on binarised data: a Bernoulli decoder's mean image is its estimate of the grey intensity."""

from __future__ import annotations

import hashlib
import time
import warnings
from dataclasses import dataclass

import numpy as np

from twinvae.data import DataError, Dataset
from twinvae.twin import Model, Twin
from vae_core import seeds

HIDDEN = (256, 128)  # the last is the features' width
EPOCHS = 10  # Fashion-MNIST: 88.7% test accuracy in 10 s of one idle core (docs/training.md)
BATCH_SIZE = 128
LEARNING_RATE = 1e-3
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
CLASSIFIER_SEED = 0  # one classifier per dataset, whatever seed draws the samples
DEFAULT_SAMPLES = 10_000  # `evaluate --fid` without --fid-samples
MIN_ROWS = 2  # a covariance needs two rows
# The first step of each stream this module draws from ('init', 'data', 'sample'): far above the steps a
# training run (its epochs are 'data' steps 1 + epoch) and the other figures (the 'sample' stream's 0-2) take.
STREAM_STEP = 3_000_000
ROOT_TOLERANCE = 1e-3  # (S_a S_b)^1/2's imaginary part and residual, relative: rounding; above it, no root
NOTE = ("an in-domain Frechet distance (features of twinvae's own classifier, not Inception's): comparable "
        "only with itself (the same dataset and classifier SHA-256), not with published FIDs")


@dataclass(frozen=True)
class Classifier:
    """The MLP's weights, (W, b) of each layer in order, float32, and the seed that made them."""

    weights: tuple[np.ndarray, ...]
    seed: int

    @property
    def sha256(self) -> str:
        """The SHA-256 of the weights' little-endian float32 bytes, layer by layer, W before b."""
        digest = hashlib.sha256()
        for w in self.weights:
            digest.update(np.ascontiguousarray(w, dtype="<f4").tobytes())
        return digest.hexdigest()

    def features(self, images: np.ndarray) -> np.ndarray:
        """The penultimate activations (N, 128) of images (N, C, H, W) in [0, 1]."""
        return activations(self.weights, flatten(images))[-2]

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        logits = activations(self.weights, flatten(images))[-1]
        return float(np.mean(logits.argmax(1) == labels))


def flatten(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, np.float32).reshape(len(images), -1)


def activations(weights: tuple[np.ndarray, ...], x: np.ndarray) -> list[np.ndarray]:
    """The input, then each layer's output: ReLU after every layer but the last (the logits)."""
    outputs = [x]
    for layer in range(0, len(weights), 2):
        z = outputs[-1] @ weights[layer] + weights[layer + 1]
        outputs.append(z if layer == len(weights) - 2 else np.maximum(z, 0))
    return outputs


def initial_weights(sizes: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """He-normal weights and zero biases, from the 'init' stream's step STREAM_STEP."""
    draw = seeds.rng(seed, "init", STREAM_STEP)
    weights = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        weights += [(draw.standard_normal((fan_in, fan_out)) * np.sqrt(2 / fan_in)).astype(np.float32),
                    np.zeros(fan_out, np.float32)]
    return weights


def gradients(weights: list[np.ndarray], x: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    """The gradients of the batch's mean softmax cross-entropy, in the weights' order."""
    outputs = activations(tuple(weights), x)
    logits = outputs[-1]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(x)), labels] -= 1
    delta = p / len(x)
    grads = []
    for layer in range(len(weights) - 2, -1, -2):
        grads = [outputs[layer // 2].T @ delta, delta.sum(0)] + grads
        if layer:
            delta = (delta @ weights[layer].T) * (outputs[layer // 2] > 0)
    return grads


def train_classifier(images: np.ndarray, labels: np.ndarray, classes: int, seed: int = CLASSIFIER_SEED,
                     epochs: int = EPOCHS, batch_size: int = BATCH_SIZE,
                     learning_rate: float = LEARNING_RATE) -> Classifier:
    """The MLP of images (N, C, H, W) and their labels, trained by minibatch Adam, each epoch's order from
    the 'data' stream's step STREAM_STEP + 1 + epoch."""
    x = flatten(images)
    weights = initial_weights((x.shape[1], *HIDDEN, classes), seed)
    moments = [np.zeros_like(w) for w in weights], [np.zeros_like(w) for w in weights]
    (beta1, beta2), step = ADAM_BETAS, 0
    for epoch in range(epochs):
        order = seeds.rng(seed, "data", STREAM_STEP + 1 + epoch).permutation(len(x))
        for start in range(0, len(x), batch_size):
            batch = order[start:start + batch_size]
            step += 1
            rate = learning_rate * (1 - beta2**step) ** 0.5 / (1 - beta1**step)
            for w, g, m, v in zip(weights, gradients(weights, x[batch], labels[batch]), *moments):
                m += (1 - beta1) * (g - m)
                v += (1 - beta2) * (g * g - v)
                w -= rate * m / (np.sqrt(v) + ADAM_EPS)
    return Classifier(tuple(weights), seed)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The Frechet distance of Gaussians fitted to two sets of feature rows (N, d), in float64:
    ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2), the covariances' unbiased estimates."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    for name, rows in (("a", a), ("b", b)):
        if rows.ndim != 2 or len(rows) < MIN_ROWS:
            raise ValueError(f"frechet_distance: {name} must be a 2-d array of at least {MIN_ROWS} feature rows, "
                             f"got shape {rows.shape}")
        if not np.isfinite(rows).all():
            raise ValueError(f"frechet_distance: {name} holds {np.sum(~np.isfinite(rows))} non-finite values "
                             "(NaN or inf)")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"frechet_distance: a's rows are {a.shape[1]} wide, b's {b.shape[1]}: features of "
                         "one width are needed")
    cov_a, cov_b = np.cov(a, rowvar=False, ddof=1), np.cov(b, rowvar=False, ddof=1)
    means = np.sum((a.mean(0) - b.mean(0)) ** 2)
    distance = float(means + np.trace(cov_a + cov_b) - 2 * trace_of_root(cov_a @ cov_b))
    if not np.isfinite(distance):
        raise ValueError(f"frechet_distance: the distance came out {distance}; the features overflow")
    return distance


def trace_of_root(product: np.ndarray) -> float:
    """Tr((S_a S_b)^1/2) by scipy's sqrtm, its negligible imaginary part dropped. Dead ReLU units make the
    covariances singular, which sqrtm warns of; its residual, checked here instead, says whether it held."""
    try:
        from scipy.linalg import LinAlgWarning, sqrtm
    except ImportError:
        raise ImportError("the Frechet distance takes scipy's matrix square root: pip install 'twinvae[data]' "
                          "(or scipy)") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LinAlgWarning)
        root = sqrtm(product)
    imaginary = np.abs(np.imag(root)).max()
    if imaginary > ROOT_TOLERANCE * max(np.abs(np.real(root)).max(), np.finfo(np.float64).tiny):
        raise ValueError(f"frechet_distance: (S_a S_b)^1/2 has an imaginary part of {imaginary:.3g}, not "
                         "rounding: the covariances are too singular (too few rows for their width?)")
    root = np.real(root)
    residual = np.linalg.norm(root @ root - product) / max(np.linalg.norm(product), np.finfo(np.float64).tiny)
    if not residual <= ROOT_TOLERANCE:
        raise ValueError(f"frechet_distance: sqrtm's (S_a S_b)^1/2 squares back to S_a S_b only to a relative "
                         f"{residual:.3g}: no square root to take its trace of")
    return float(np.trace(root))


def prior_samples(twin: Twin, model: Model, n: int, seed: int, batch: int) -> np.ndarray:
    """n samples of the model's prior, each by its own `sample` (whatever its prior), `batch` at a time,
    chunk i with a seed drawn from the 'sample' stream's step STREAM_STEP + i (so the chunks differ); a
    class-conditional model's of every class in turn (evenly, to within one)."""
    classes = model.config.num_classes
    labels = np.arange(n) % classes if classes else None
    chunks = []
    for chunk, start in enumerate(range(0, n, batch)):
        size = min(batch, n - start)
        chunk_seed = int(seeds.rng(seed, "sample", STREAM_STEP + chunk).integers(2**62))
        y = None if labels is None else twin.as_labels(labels[start:start + size], model)
        chunks.append(twin.to_numpy(model.sample(size, chunk_seed, labels=y)).astype(np.float32))
    return np.concatenate(chunks)


def floor_images(data: Dataset, seed: int) -> np.ndarray:
    """As many training images as the test set holds: the first of the 'data' stream's step STREAM_STEP
    permutation (all of them where the training set is the smaller)."""
    order = seeds.rng(seed, "data", STREAM_STEP).permutation(len(data.train_x))
    return data.train_x[order[:len(data.test_x)]]


def check_samples(samples: int) -> int:
    """A number of prior samples the distance can be taken of: at least MIN_ROWS."""
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < MIN_ROWS:
        raise ValueError(f"the Frechet distance needs at least {MIN_ROWS} samples, got {samples!r}")
    return int(samples)


def frechet_figures(twin: Twin, model: Model, data: Dataset, samples: int, seed: int, batch: int,
                    classifier_seed: int = CLASSIFIER_SEED, epochs: int = EPOCHS) -> dict:
    """The in-domain Frechet distance of `samples` prior samples (seed `seed`) to the test set of `data`
    (grey images, not binarised), the floor, and the classifier's test accuracy, SHA-256 and seed."""
    if data.train_y is None or data.test_y is None:
        raise DataError(f"{data.name} has no labels: the Frechet distance's classifier needs a labelled dataset")
    check_samples(samples)
    classes = len(data.classes) if data.classes else int(data.train_y.max()) + 1
    start = time.perf_counter()
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency, so twinvae[data]'s

    # one BLAS thread: the weights (their SHA-256) then do not depend on a machine's core count, and the
    # small matmuls run 6x faster on a busy machine than on two contended threads (docs/training.md)
    with threadpool_limits(limits=1, user_api="blas"):
        classifier = train_classifier(data.train_x, data.train_y, classes, classifier_seed, epochs)
    seconds = time.perf_counter() - start
    test = classifier.features(data.test_x)
    drawn = classifier.features(prior_samples(twin, model, samples, seed, batch))
    return {"distance": frechet_distance(drawn, test),
            "floor": frechet_distance(classifier.features(floor_images(data, classifier_seed)), test),
            "samples": samples, "test_images": len(data.test_x),
            "classifier_test_accuracy": classifier.accuracy(data.test_x, data.test_y),
            "classifier_sha256": classifier.sha256, "classifier_seed": classifier_seed,
            "classifier_epochs": epochs, "classifier_seconds": seconds, "note": NOTE}


def report_lines(figures: dict | None) -> str:
    """The figures as lines of `twinvae evaluate`'s report ("" for none)."""
    if not figures:
        return ""
    return (f"\n  Frechet distance   {figures['distance']:9.3f} of {figures['samples']} prior samples to the "
            f"{figures['test_images']} grey test images (floor {figures['floor']:.3f}: as many training images)"
            f"\n    its classifier   MLP of the training images, test accuracy "
            f"{figures['classifier_test_accuracy']:.1%}, seed {figures['classifier_seed']}, SHA-256 "
            f"{figures['classifier_sha256'][:16]} (trained in {figures['classifier_seconds']:.1f} s)"
            f"\n    {figures['note']}")


def markdown_columns(figures: dict | None) -> tuple[list[str], list[str]]:
    """The figures as a results table's header and cells (none for none)."""
    if not figures:
        return [], []
    return (["Frechet distance (in-domain, comparable only with itself)", "floor", "samples",
             "classifier accuracy", "classifier SHA-256"],
            [f"{figures['distance']:.3f}", f"{figures['floor']:.3f}", str(figures["samples"]),
             f"{figures['classifier_test_accuracy']:.1%}", figures["classifier_sha256"][:16]])
