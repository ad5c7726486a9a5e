"""A reward function of your own for recipes/tiny-cpu-grpo.yaml (named there as `tiny_rewards.py:digits`).

unifier calls it the same way on every backend: `prompts` are the prompts as messages, `completions` the
model's answers as text, and every other column of the data rows arrives by name as a list (here `answer`).
Return one float per completion (or None to abstain)."""


def digits(prompts, completions, answer, **columns):
    """The share of the answer's characters that are digits: 1.0 for a bare number, 0.0 for words only."""
    scores = []
    for text in completions:
        text = text.strip()
        scores.append(sum(ch.isdigit() for ch in text) / len(text) if text else 0.0)
    return scores
