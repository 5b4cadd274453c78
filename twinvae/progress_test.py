import io

from twinvae.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_gets_a_live_bar_with_the_label_and_the_rate(monkeypatch, capsys):
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    bar = Progress(4)
    for _ in range(4):
        bar.advance()
        bar.stage("epoch 1/2 loss 12.345")
    bar.write("epoch 1: train 12.3")
    bar.close()
    shown = terminal.getvalue()
    assert "4/4" in shown and "epoch 1/2 loss 12.345" in shown and "step/s" in shown
    assert capsys.readouterr().out == "epoch 1: train 12.3\n"


def test_a_file_or_a_pipe_gets_nothing_but_the_lines_written(monkeypatch, capsys):
    log = io.StringIO()  # isatty() is False, as for a log file or a pipe
    monkeypatch.setattr("sys.stderr", log)
    bar = Progress(4)
    bar.advance(2)
    bar.stage("epoch 1/2")
    bar.write("epoch 1: train 12.3")
    bar.close()
    assert log.getvalue() == "" and capsys.readouterr().out == "epoch 1: train 12.3\n"


def test_disabled_on_a_terminal_too(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    bar = Progress(3, enabled=False)
    bar.advance()
    bar.close()
    assert terminal.getvalue() == ""
