from pathlib import Path

from mlx_lm import generate, load

from ai_lsp_tune.prompts import SYSTEM_PROMPT, user_prompt


def test_tiny_model_loads_and_generates_with_its_chat_template(tiny_model: Path) -> None:
    model, tokenizer = load(str(tiny_model))
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user_prompt("python", "x = 1\n", "a.py")},
    ]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    text = tokenizer.decode(prompt)
    assert text.endswith("<|im_start|>assistant\n")
    assert "Analyze this python code" in text
    out = generate(model, tokenizer, prompt=prompt, max_tokens=8)
    assert isinstance(out, str)
