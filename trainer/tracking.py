"""Moved: the client for people's own scripts is the `trainlens` package.

    import trainlens

    with trainlens.init(name="gpt2-small", config={"vocab_size": 50257}) as run:
        run.log({"train/loss": loss}, step=step)

Kept as a re-export so `from trainer.tracking import Run` still finds the class."""

from trainlens import Run, finish, init, log

__all__ = ["Run", "finish", "init", "log"]
