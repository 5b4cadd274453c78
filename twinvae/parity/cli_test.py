from twinvae.parity import cli


def test_the_batch_size_given_applies_to_the_standard_cases():
    parser = cli.parser()
    args = parser.parse_args(["--batch-size", "3", "--case", "mlp 1x8x8"])
    assert [c.batch_size for c in cli.chosen_cases(parser, args)] == [3]
