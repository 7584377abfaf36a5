"""The benchmarks' request texts, the studies' configurations and the served encoder's length split (no server)."""

from __future__ import annotations

import json

import numpy as np

from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.perf.embedding_sessions import embedder
from modelrepo.perf.studies.dynamic_batcher_stall import VARIANTS
from modelrepo.perf.workloads import SHORT_PER_LONG, mixed_texts, reviews, short_texts, text_input_data
from modelrepo.triton.model_config import read_config


def test_short_texts_are_3_to_15_tokens_with_the_served_tokenizer():
    session = embedder(1)
    tokens = [int(session.tokenize([text])["attention_mask"].sum()) for text in short_texts()]
    assert len(tokens) == 64 and min(tokens) >= 3 and max(tokens) <= 15, (min(tokens), max(tokens))


def test_the_served_encoder_splits_a_mixed_batch_by_length_with_the_same_embeddings():
    from modelrepo.python_backends.batching import RAGGED_RUN_COST_TOKENS

    session = embedder(1)
    texts = [*short_texts(3), reviews(1)[0]]
    requests = [session.tokenize([text]) for text in texts]  # as the encoder receives them: each text alone
    assert session.runner.ragged_run_cost_tokens == RAGGED_RUN_COST_TOKENS
    runs, run = [], session.runner.run
    session.runner.run = lambda joined: runs.append(joined["input_ids"].shape) or run(joined)
    split = session.runner.execute_batch(requests)
    assert len(runs) >= 2 and (len(texts), requests[-1]["input_ids"].shape[1]) not in runs  # the queries ran apart
    for text, answer in zip(texts, split):
        np.testing.assert_allclose(answer["embedding"], run(session.tokenize([text]))["embedding"], atol=1e-5)


def test_input_data_is_one_single_text_request_per_text(tmp_path):
    path = text_input_data(["a query", "another"], tmp_path / "data.json")
    assert json.loads(path.read_text()) == {"data": [{"TEXT": {"content": ["a query"], "shape": [1]}},
                                                     {"TEXT": {"content": ["another"], "shape": [1]}}]}


def test_the_study_states_the_tokenizers_batching_whatever_the_repository_holds():
    configs = {name: read_config(MODEL_REPOSITORY / name) for name in ("minilm_tokenizer", "sentiment_head")}
    before = VARIANTS["tokenizer batched, 1 instance (before)"](configs)["minilm_tokenizer"]
    assert before.dynamic_batching.default_queue_policy.max_queue_size == 64
    two = VARIANTS["tokenizer batched, 2 instances"](configs)["minilm_tokenizer"]
    assert two.HasField("dynamic_batching") and two.instance_group[0].count == 2
    plain = VARIANTS["tokenizer batched, no queue policy or priorities (shipped)"](configs)["minilm_tokenizer"]
    assert plain.HasField("dynamic_batching") and not plain.dynamic_batching.HasField("default_queue_policy")
    assert plain.dynamic_batching.priority_levels == 0
    unbatched = VARIANTS["tokenizer unbatched, 1 instance"](configs)
    assert not unbatched["minilm_tokenizer"].HasField("dynamic_batching") and "sentiment_head" not in unbatched
    both = VARIANTS["tokenizer and sentiment_head unbatched"](configs)
    assert not both["sentiment_head"].HasField("dynamic_batching")
    assert read_config(MODEL_REPOSITORY / "minilm_tokenizer") == configs["minilm_tokenizer"]  # copies, not edits


def test_the_credit_queue_study_arranges_the_fan_outs_members_from_the_shipped_configs():
    from modelrepo.perf.studies.credit_step_queues import GUARD, MEMBERS, STUDIES

    configs = {name: read_config(MODEL_REPOSITORY / name) for name in (*MEMBERS, GUARD)}
    arrangements = STUDIES["credit_default"]
    shipped = configs[MEMBERS[3]]
    assert shipped.instance_group[0].count == 1 and shipped.dynamic_batching.default_queue_policy.max_queue_size > 0
    two = arrangements["members bounded, 2 instances each"](configs)
    assert set(two) == set(MEMBERS) and all(c.instance_group[0].count == 2 for c in two.values())
    cascade = arrangements["credit_member_0 bounded with 2 instances, the other members unbounded, 1 each"](configs)
    assert cascade[MEMBERS[0]].instance_group[0].count == 2
    assert cascade[MEMBERS[0]].dynamic_batching.default_queue_policy == shipped.dynamic_batching.default_queue_policy
    assert not any(cascade[m].dynamic_batching.HasField("default_queue_policy") for m in MEMBERS[1:])
    assert all(cascade[m].dynamic_batching.max_queue_delay_microseconds == 200 for m in MEMBERS[1:])  # still batched
    assert read_config(MODEL_REPOSITORY / MEMBERS[3]) == shipped  # copies, not edits


def test_the_mixed_workload_sends_four_short_texts_then_one_review():
    texts = mixed_texts(80)
    longs = set(reviews(80))
    kinds = ["long" if text in longs else "short" for text in texts]
    assert len(texts) == 80 and kinds.count("long") == 80 // (SHORT_PER_LONG + 1) == 16
    assert kinds[:10] == ["short"] * SHORT_PER_LONG + ["long"] + ["short"] * SHORT_PER_LONG + ["long"]
    assert set(texts) - longs <= set(short_texts(80))


def test_tune_refuses_a_workload_for_a_model_without_one_text_input(capsys):
    from modelrepo.cli import main

    assert main(["tune", "credit_default", "--p99-ms", "100", "--workload", "mixed"]) == 2
    assert "--workload mixed: credit_default does not take one TEXT input" in capsys.readouterr().err
    assert main(["tune", "text_embedding", "--p99-ms", "100", "--workload", "short", "--input-data", "x.json"]) == 2
    assert "give one" in capsys.readouterr().err
