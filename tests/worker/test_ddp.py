"""A run asking for nproc=2 runs under torchrun with DDP on CPU (gloo); rank 0 writes."""

from __future__ import annotations

from tests.worker.conftest import Api, WorkerProcess, wait_for


def test_worker_launches_a_two_process_ddp_run(api: Api, worker: WorkerProcess) -> None:
    run_id = api.launch(name="ddp", max_steps=12, nproc=2, eval_interval=6)
    run = wait_for(lambda: api.status_is(run_id, "completed", "failed"), 240, "the DDP run")
    assert run["status"] == "completed", run["error"]
    assert run["tokens_per_step"] == 2 * run["config"]["batch_size"] * run["config"]["block_size"]
    assert api.loss_steps(run_id) == list(range(12))
    # train() refuses a world size other than config.nproc, so completing means two
    # ranks trained; both say so in the run's output.
    output = (api.server.data_dir / "runs" / str(run_id) / "output.log").read_text()
    assert f"run {run_id}: rank 0 of 2" in output and f"run {run_id}: rank 1 of 2" in output
