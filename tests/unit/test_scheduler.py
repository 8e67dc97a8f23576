"""Scheduler: token budget, chunked prefill, max_num_seqs, preemption by recompute, priority, no block leaks."""

from __future__ import annotations

from engine_helpers import make_request

from trt_gateway.engine.block_manager import BlockManager
from trt_gateway.engine.scheduler import Scheduler, SchedulerOutput
from trt_gateway.engine.sequence import SampledToken, Sequence, SequenceStatus
from trt_gateway.types import FinishReason

BS = 4


class Harness:
    """A scheduler over a real block manager, with a fake model that always samples token 7."""

    def __init__(self, num_blocks=64, max_num_seqs=8, budget=64, max_model_len=64, prefix_caching=True):
        self.bm = BlockManager(num_blocks, BS, prefix_caching)
        self.sched = Scheduler(
            self.bm, max_num_seqs=max_num_seqs, max_num_batched_tokens=budget, max_model_len=max_model_len
        )
        self.arrivals = 0

    def add(self, prompt_len, max_tokens=8, priority=0, first_token=10):
        req = make_request(f"r{self.arrivals}", max_tokens=max_tokens, priority=priority)
        s = Sequence(
            req,
            list(range(first_token, first_token + prompt_len)),
            arrival_index=self.arrivals,
            eos_token_ids=(2,),
            seed=0,
        )
        self.arrivals += 1
        self.sched.add(s)
        return s

    def step(self) -> SchedulerOutput:
        out = self.sched.schedule()
        sampled = {s.seq.seq_id: (SampledToken(7),) for s in out.scheduled if s.samples}
        self.sched.postprocess(out, sampled)
        return out

    def run(self, max_steps=1000) -> list[SchedulerOutput]:
        outs: list[SchedulerOutput] = []
        while self.sched.has_unfinished() and len(outs) < max_steps:
            outs.append(self.step())
        assert not self.sched.has_unfinished()
        return outs


def test_budget_bounds_every_step_and_long_prompts_are_chunked():
    h = Harness(budget=10)
    long = h.add(23, max_tokens=3)
    outs = h.run()
    assert all(o.num_batched_tokens <= 10 for o in outs)
    chunks = [o.scheduled[0].num_new_tokens for o in outs]
    assert chunks == [10, 10, 3, 1, 1]  # 23-token prompt in 3 chunks; the last chunk samples; then 2 decodes
    assert [o.scheduled[0].samples for o in outs] == [False, False, True, True, True]
    assert long.output_token_ids == [7, 7, 7] and long.finish_reason is FinishReason.LENGTH
    assert h.bm.num_free_blocks == 64


def test_decodes_and_a_new_prompt_share_a_step():
    h = Harness(budget=8)
    a = h.add(3, max_tokens=5)
    h.step()  # a's prompt
    b = h.add(12, max_tokens=2)
    out = h.step()
    assert [(s.seq, s.num_new_tokens) for s in out.scheduled] == [(a, 1), (b, 7)]  # decode first, b gets the rest
    h.run()
    assert h.bm.num_free_blocks == 64


def test_max_num_seqs_caps_the_running_batch():
    h = Harness(max_num_seqs=2)
    seqs = [h.add(4, max_tokens=3) for _ in range(5)]
    out = h.step()
    assert len(out.scheduled) == 2 and len(h.sched.running) == 2 and len(h.sched.waiting) == 3
    h.run()
    assert all(s.status is SequenceStatus.FINISHED for s in seqs)
    assert h.bm.num_free_blocks == 64


def test_priority_orders_the_waiting_queue():
    h = Harness(max_num_seqs=1)
    low = h.add(4, max_tokens=2, priority=0)
    high = h.add(4, max_tokens=2, priority=5)
    mid = h.add(4, max_tokens=2, priority=1)
    order = []
    for out in h.run():
        for s in out.scheduled:
            if s.seq not in order:
                order.append(s.seq)
    assert order == [high, mid, low]


def test_preemption_frees_the_lowest_priority_and_recomputes_it():
    # 6 blocks: two 8-token prompts (2 blocks each) fit, but both cannot grow to 16 tokens (4 blocks each).
    h = Harness(num_blocks=6, max_model_len=24, prefix_caching=False)
    first = h.add(8, max_tokens=8)
    second = h.add(8, max_tokens=8, first_token=40)
    preempted: list[Sequence] = []
    outs = []
    while h.sched.has_unfinished():
        out = h.step()
        outs.append(out)
        preempted.extend(out.preempted)
        assert h.bm.num_free_blocks + sum(len(s.block_table) for s in h.sched.running) == 6
    assert preempted and set(preempted) == {second}  # the later arrival is the victim, never the earlier one
    assert second.num_preemptions >= 1
    # On readmission it recomputes prompt + generated tokens as one prefill, then carries on to 8 outputs.
    readmit = next(s for o in outs for s in o.scheduled if s.seq is second and s.start == 0 and o is not outs[0])
    assert readmit.num_new_tokens > 8
    assert first.output_token_ids == [7] * 8 and second.output_token_ids == [7] * 8
    assert h.bm.num_free_blocks == 6


def test_preempted_sequence_goes_ahead_of_later_arrivals():
    h = Harness(num_blocks=6, max_model_len=24, prefix_caching=False, max_num_seqs=2)
    h.add(8, max_tokens=8)
    second = h.add(8, max_tokens=8, first_token=40)
    third = h.add(4, max_tokens=2, first_token=80)  # waits: max_num_seqs=2
    while not second.num_preemptions:
        h.step()
    assert h.sched.waiting[:2] == [second, third]


def test_higher_priority_sequences_are_never_victims():
    h = Harness(num_blocks=4, max_model_len=16, prefix_caching=False)
    high = h.add(8, max_tokens=8, priority=1)
    low = h.add(4, max_tokens=8, first_token=40)
    h.run()
    assert high.num_preemptions == 0 and low.num_preemptions >= 1
    assert high.num_output_tokens == 8 and low.num_output_tokens == 8
    assert h.bm.num_free_blocks == 4


def test_finish_frees_blocks_of_waiting_and_running_sequences():
    h = Harness(max_num_seqs=1)
    running = h.add(9, max_tokens=20)
    waiting = h.add(9, max_tokens=20, first_token=50)
    h.step()
    assert running.status is SequenceStatus.RUNNING and waiting.status is SequenceStatus.WAITING
    h.sched.finish(running, FinishReason.CANCELLED)
    h.sched.finish(waiting, FinishReason.CANCELLED)
    h.sched.finish(waiting, FinishReason.CANCELLED)  # idempotent
    assert not h.sched.has_unfinished()
    assert h.bm.num_free_blocks == 64
    assert running.finish_reason is FinishReason.CANCELLED


def test_context_window_full_finishes_with_length():
    h = Harness(max_model_len=12)
    s = h.add(9, max_tokens=100)
    h.run()
    assert s.num_tokens == 12 and s.finish_reason is FinishReason.LENGTH


def test_the_last_running_sequence_preempts_itself():
    h = Harness(num_blocks=3, max_model_len=12, prefix_caching=False)
    high = h.add(4, max_tokens=6, priority=1)
    low = h.add(4, max_tokens=6, first_token=40)
    h.step()  # both prompts: one block each, one token sampled each
    out = h.step()  # high takes the last free block for position 4; low finds none and nobody is behind it
    assert out.preempted == (low,)
    assert [s.seq for s in out.scheduled] == [high]
    assert low.status is SequenceStatus.WAITING and low.block_table == [] and low.num_computed_tokens == 0
    h.run()
    assert high.num_output_tokens == 6 and low.num_output_tokens == 6
    assert h.bm.num_free_blocks == 3
