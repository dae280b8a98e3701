"""A tiny causal transformer that learns the characters of a text shipped with the repository
(examples/data/zen_of_python.txt, the Zen of Python from the stdlib's `this` module).

One pre-norm block: token + position embeddings, two-head causal self-attention
(`nn.scaled_dot_product_attention`), a GELU MLP, layer norms, trained with `fit` and AdamW
under a warm-up + cosine schedule. The same `forward` function is then run eagerly on NumPy
arrays to sample text. Run `python examples/char_transformer.py` (`--quick` or
CHAINJIT_QUICK=1 for a smoke run).
"""

import os
import sys
import time

import numpy as np

from compiler import nn
from runtime import fit, init, optim

QUICK = "--quick" in sys.argv or os.environ.get("CHAINJIT_QUICK") == "1"
TEXT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "zen_of_python.txt")
CONTEXT, DIM, HEADS = 32, 48, 2


def load_text():
    with open(TEXT_PATH, encoding="utf-8") as f:
        text = f.read()
    vocab = sorted(set(text))
    ids = np.array([vocab.index(c) for c in text], np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(ids, CONTEXT + 1)
    return text, vocab, windows[:, :-1].copy(), windows[:, 1:].copy()


def unigram_entropy(text):
    """Entropy of the character frequencies, in nats: the loss of the best context-free model."""
    _, counts = np.unique(list(text), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def init_params(vocab_size, seed=0):
    rng = np.random.default_rng(seed)
    d, f = DIM, 4 * DIM
    return {
        "tok": init.normal(rng, (vocab_size, d), 0.1), "pos": init.normal(rng, (CONTEXT, d), 0.1),
        "ln1_g": init.ones((d,)), "ln1_b": init.zeros((d,)),
        "wq": init.glorot_uniform(rng, (d, d)), "wk": init.glorot_uniform(rng, (d, d)),
        "wv": init.glorot_uniform(rng, (d, d)), "wo": init.glorot_uniform(rng, (d, d)),
        "ln2_g": init.ones((d,)), "ln2_b": init.zeros((d,)),
        "w1": init.he_uniform(rng, (d, f)), "b1": init.zeros((f,)),
        "w2": init.glorot_uniform(rng, (f, d)), "b2": init.zeros((d,)),
        "lnf_g": init.ones((d,)), "lnf_b": init.zeros((d,)),
        "head": init.glorot_uniform(rng, (d, vocab_size)), "head_b": init.zeros((vocab_size,)),
    }


def split_heads(x):
    b, t, _ = x.shape
    return x.reshape(b, t, HEADS, DIM // HEADS).transpose(0, 2, 1, 3)  # (B, H, T, dh)


def forward(p, ids):
    b, t = ids.shape
    h = nn.embedding(p["tok"], ids) + p["pos"][:t]
    a = nn.layer_norm(h, p["ln1_g"], p["ln1_b"])
    q, k, v = (split_heads(a @ p[name]) for name in ("wq", "wk", "wv"))
    att = nn.scaled_dot_product_attention(q, k, v, causal=True)
    h = h + att.transpose(0, 2, 1, 3).reshape(b, t, DIM) @ p["wo"]
    m = nn.layer_norm(h, p["ln2_g"], p["ln2_b"])
    h = h + nn.gelu(m @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
    return nn.layer_norm(h, p["lnf_g"], p["lnf_b"]) @ p["head"] + p["head_b"]


def loss(params, x, y):
    return nn.cross_entropy(forward(params, x), y)  # mean over batch and positions


def sample(params, vocab, prompt, length, seed=0, temperature=0.7):
    """Generate eagerly: `forward` runs on NumPy arrays, no compilation involved."""
    rng = np.random.default_rng(seed)
    ids = [vocab.index(c) for c in prompt]
    for _ in range(length):
        context = np.array([ids[-CONTEXT:]])
        logits = forward(params, context)[0, -1] / temperature
        ids.append(int(rng.choice(len(vocab), p=nn.softmax(logits.astype(np.float64)))))
    return "".join(vocab[i] for i in ids)


def main():
    text, vocab, x, y = load_text()
    params = init_params(len(vocab))
    epochs, batch = (1, 16) if QUICK else (60, 32)
    if QUICK:  # a smoke run: a few steps on the first windows
        x, y = x[: 6 * batch], y[: 6 * batch]
    steps = epochs * (len(x) // batch)
    schedule = optim.warmup(optim.cosine(3e-3, steps, final_lr=1e-4), 50)
    print(f"text: {len(text)} characters, vocabulary {len(vocab)}; one-block transformer, "
          f"d={DIM}, {HEADS} heads, context {CONTEXT}; {epochs} epochs of {len(x) // batch} steps")
    start = time.perf_counter()
    history = fit(loss, params, (x, y), optim.AdamW(schedule, weight_decay=0.01),
                  epochs=epochs, batch_size=batch)
    seconds = time.perf_counter() - start
    final = float(loss(params, x, y))
    entropy = unigram_entropy(text)
    print(f"trained in {seconds:.1f} s; last epoch mean loss {history['loss'][-1]:.3f}")
    print(f"loss on the whole text: {final:.3f} nats/char  vs  unigram entropy "
          f"{entropy:.3f} nats/char")
    print("sample:\n" + sample(params, vocab, "Beautiful", 120 if QUICK else 300))
    if not QUICK and final > 0.5 * entropy:
        sys.exit("expected the loss to fall well below the unigram entropy")


if __name__ == "__main__":
    main()
