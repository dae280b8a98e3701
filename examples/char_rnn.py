"""A character-level GRU language model on a text shipped with the repository
(examples/data/zen_of_python.txt), its time loop a `compiler.scan`.

Embedding -> GRU (`nn.gru_cell`, looped over the sequence by `scan`: one loop in the compiled
code, not one copy of the cell per character) -> a linear head, trained with `fit` and Adam
on windows of the text. The compiled step's size does not depend on the window length; the
same `forward` runs eagerly on NumPy arrays to sample text. Run `python examples/char_rnn.py`
(`--quick` or CHAINJIT_QUICK=1 for a smoke run).
"""

import os
import sys
import time

import numpy as np

from compiler import nn, scan
from runtime import fit, init, optim

QUICK = "--quick" in sys.argv or os.environ.get("CHAINJIT_QUICK") == "1"
TEXT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "zen_of_python.txt")
WINDOW, EMBED, HIDDEN = 32, 32, 128


def load_text():
    with open(TEXT_PATH, encoding="utf-8") as f:
        text = f.read()
    vocab = sorted(set(text))
    ids = np.array([vocab.index(c) for c in text], np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(ids, WINDOW + 1)
    return text, vocab, windows[:, :-1].copy(), windows[:, 1:].copy()


def init_params(vocab_size, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "emb": init.normal(rng, (vocab_size, EMBED), 0.1),
        "w_x": init.glorot_uniform(rng, (EMBED, 3 * HIDDEN)),
        "w_h": init.glorot_uniform(rng, (HIDDEN, 3 * HIDDEN)),
        "b_x": init.zeros((3 * HIDDEN,)), "b_h": init.zeros((3 * HIDDEN,)),
        "head": init.glorot_uniform(rng, (HIDDEN, vocab_size)),
        "head_b": init.zeros((vocab_size,)),
    }


def forward(p, ids, h0=None):
    """Logits (batch, time, vocab) and the last hidden state, for character ids (batch, time)."""
    b, _ = ids.shape
    x = nn.embedding(p["emb"], ids) @ p["w_x"] + p["b_x"]  # every step's input projection
    h0 = np.zeros((b, HIDDEN), np.float32) if h0 is None else h0

    def step(h, x_t):
        h = nn.gru_cell(x_t, h, None, p["w_h"], None, p["b_h"])
        return h, h

    h, hs = scan(step, h0, x.transpose(1, 0, 2))  # over time: hs (time, batch, hidden)
    return hs.transpose(1, 0, 2) @ p["head"] + p["head_b"], h


def loss(params, x, y):
    return nn.cross_entropy(forward(params, x)[0], y)  # mean over batch and positions


def unigram_entropy(text):
    _, counts = np.unique(list(text), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def sample(params, vocab, prompt, length, seed=0, temperature=0.6):
    """Generate eagerly, one character at a time, carrying the GRU state (NumPy only)."""
    rng = np.random.default_rng(seed)
    ids = [vocab.index(c) for c in prompt]
    logits, h = forward(params, np.array([ids]))
    for _ in range(length):
        p = nn.softmax(logits[0, -1].astype(np.float64) / temperature)
        ids.append(int(rng.choice(len(vocab), p=p)))
        logits, h = forward(params, np.array([ids[-1:]]), h)
    return "".join(vocab[i] for i in ids)


def main():
    text, vocab, x, y = load_text()
    params = init_params(len(vocab))
    epochs, batch = (1, 16) if QUICK else (40, 32)
    if QUICK:
        x, y = x[: 4 * batch], y[: 4 * batch]
    print(f"text: {len(text)} characters, vocabulary {len(vocab)}; GRU language model, "
          f"hidden {HIDDEN}, windows of {WINDOW}; {epochs} epochs of {len(x) // batch} steps")
    start = time.perf_counter()
    history = fit(loss, params, (x, y), optim.Adam(3e-3), epochs=epochs, batch_size=batch)
    seconds = time.perf_counter() - start
    final = float(loss(params, x, y))
    entropy = unigram_entropy(text)
    print(f"trained in {seconds:.1f} s; last epoch mean loss {history['loss'][-1]:.3f}")
    print(f"loss on the whole text: {final:.3f} nats/char  vs  unigram entropy "
          f"{entropy:.3f} nats/char")
    print("sample:\n" + sample(params, vocab, "Beautiful", 80 if QUICK else 300))
    if not QUICK and final > 0.5 * entropy:
        sys.exit("expected the loss to fall well below the unigram entropy")


if __name__ == "__main__":
    main()
