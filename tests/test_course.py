"""The course's grader: every check fails on the untouched stub and passes on minclip's own code; the CLI's output
and exit codes; the learner's mistakes (crashes, endless loops, edits in place) become reports, never crashes.

"minclip's own code" is, per exercise, a small file that re-exports minclip's functions under the exercise's names;
where minclip has no function of that exact signature, the file adapts the minclip function or module that does
the work (the lines of ``MultiheadSelfAttention.forward`` that split and merge heads, ``BPETokenizer.train`` on the
words given, ``retrieval_recall``'s dict, ...). The grader runs from files, so these are written to ``tmp_path``.
"""

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from course.__main__ import EXERCISES_DIR, main
from course.checks import EXERCISES, LoadError, grade, load_file
from course.checks.base import Check, Exercise, Wrong, call, function

ROOT = Path(__file__).resolve().parents[1]

MINCLIP_AS_LEARNER = {
    "attention": '''
        from torch.func import functional_call
        from minclip.attention import MultiheadSelfAttention, scaled_dot_product_attention

        def split_heads(x, heads):  # the head split of MultiheadSelfAttention.forward, for one of q, k, v
            B, T, D = x.shape
            return x.view(B, T, heads, D // heads).permute(0, 2, 1, 3)

        def merge_heads(x):  # the head merge of MultiheadSelfAttention.forward
            B, H, T, d = x.shape
            return x.transpose(1, 2).reshape(B, T, H * d)

        def multi_head_self_attention(x, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, heads,
                                      mask=None):
            module = MultiheadSelfAttention(x.shape[-1], heads)
            weights = {"in_proj_weight": in_proj_weight, "in_proj_bias": in_proj_bias,
                       "out_proj.weight": out_proj_weight, "out_proj.bias": out_proj_bias}
            return functional_call(module, weights, (x,), {"attn_mask": mask})[0]  # gradients reach the weights
    ''',
    "bpe": '''
        import warnings
        from collections import Counter
        from minclip.tokenizer import END_OF_WORD, NUM_BASE_TOKENS, BPETokenizer, bytes_to_unicode, merge_pair

        def count_pairs(word_counts):  # the count BPETokenizer.train starts from
            counts = Counter()
            for symbols, count in word_counts.items():
                for pair in zip(symbols, symbols[1:]):
                    counts[pair] += count
            return counts

        def learn_merges(word_counts, num_merges):  # minclip's trainer, on the words spelled back as text
            byte_of = {symbol: byte for byte, symbol in bytes_to_unicode().items()}
            def spell(symbols):
                return bytes(byte_of[c] for c in "".join(symbols).removesuffix(END_OF_WORD)).decode("utf-8")
            texts = [" ".join([spell(symbols)] * count) for symbols, count in word_counts.items()]
            with warnings.catch_warnings():  # "the corpus ran out of pairs": one check asks for too many merges
                warnings.simplefilter("ignore")
                return BPETokenizer.train(texts, vocab_size=NUM_BASE_TOKENS + num_merges + 2).merges
    ''',
    "text_pooling": '''
        import torch
        from minclip.attention import causal_mask
        from minclip.text import first_eot_index

        def pool_text_features(hidden, tokens, eot_token_id, text_projection):  # TextTransformer.forward's pooling
            return hidden[torch.arange(len(hidden)), first_eot_index(tokens, eot_token_id)] @ text_projection
    ''',
    "patchify": '''
        import torch
        from minclip.vision import VisionTransformer, patchify
        from minclip.vision import patch_embed_unfold as patch_embed

        def vit_tokens(images, conv_weight, class_embedding, positional_embedding):  # what minclip's ViT feeds ln_pre
            width, _, patch, _ = conv_weight.shape
            vit = VisionTransformer(images.shape[-1], patch, width, layers=1, heads=1, embed_dim=1)
            vit.load_state_dict({**vit.state_dict(), "conv1.weight": conv_weight, "class_embedding": class_embedding,
                                 "positional_embedding": positional_embedding})
            captured = []
            vit.ln_pre.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0]))
            with torch.no_grad():
                vit(images)
            return captured[0]
    ''',
    "infonce": '''
        from minclip.evaluate import similarity_matrix
        from minclip.loss import clip_loss

        def clip_logits(image_features, text_features, logit_scale):
            logits = logit_scale.exp() * similarity_matrix(image_features, text_features)
            return logits, logits.T
    ''',
    "training": '''
        from minclip.loss import clip_loss
        from minclip.train import parameter_groups as weight_decay_groups, warmup_cosine
        from minclip.train import train_step as training_step

        def lr_multiplier(step, total_steps, warmup_steps):
            return warmup_cosine(total_steps, warmup_steps)(step)
    ''',
    "zero_shot": '''
        from minclip.evaluate import average_templates, similarity_matrix

        def build_classifier(encode_texts, classnames, templates):
            captions = [template.format(name) for name in classnames for template in templates]
            return average_templates(encode_texts(captions).view(len(classnames), len(templates), -1))

        def zero_shot_predict(image_features, classifier):
            return similarity_matrix(image_features, classifier).argmax(dim=1)
    ''',
    "recall": '''
        from minclip.evaluate import retrieval_recall

        def text_to_image_recall(similarity, caption_to_image, k):
            return retrieval_recall(similarity, caption_to_image, ks=(k,))["text_to_image"][f"R@{k}"]

        def image_to_text_recall(similarity, caption_to_image, k):
            return retrieval_recall(similarity, caption_to_image, ks=(k,))["image_to_text"][f"R@{k}"]
    ''',
    "guidance": '''
        from minclip.guidance import best_of_n_success, straight_through_one_hot
    ''',
    "robustness": '''
        from minclip.evaluate import effective_robustness, robustness_line
    ''',
    "negclip": '''
        from minclip.foils import batch_foils as usable_foils
        from minclip.loss import clip_loss

        def negclip_loss(image_features, text_features, foil_features, logit_scale):
            return clip_loss(image_features, text_features, logit_scale, foil_features)
    ''',
}


def write(directory: Path, name: str, source: str) -> Path:
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


@pytest.fixture(scope="module")
def minclip_dir(tmp_path_factory) -> Path:
    """A folder holding minclip's implementation of every exercise, as a learner's folder would hold theirs."""
    directory = tmp_path_factory.mktemp("minclip_as_learner")
    for name, source in MINCLIP_AS_LEARNER.items():
        write(directory, name, source)
    return directory


def stub_path(name: str) -> Path:
    """course/exercises/NAME.py, or a skip when it holds a learner's work rather than the shipped stub.

    A learner who runs the whole suite after solving an exercise has edited the stub in place; the tests about the
    stub then say so and skip. In CI (a fresh clone, the environment variable CI set) nothing is skipped.
    """
    path = EXERCISES_DIR / f"{name}.py"
    tree = ast.parse(path.read_text())
    bodies = [node.body[1:] if ast.get_docstring(node) else node.body
              for node in tree.body if isinstance(node, ast.FunctionDef)]
    untouched = all(len(body) == 1 and isinstance(body[0], ast.Raise) and "NotImplementedError" in ast.unparse(body[0])
                    for body in bodies)
    if not untouched and not os.environ.get("CI"):
        pytest.skip(f"course/exercises/{name}.py holds your own code, not the shipped stub; the tests of the stub "
                    "run on a fresh clone (or with CI=1)")
    return path


def test_every_exercise_has_minclips_implementation_here():
    assert set(MINCLIP_AS_LEARNER) == set(EXERCISES)


@pytest.mark.parametrize("name", list(EXERCISES))
def test_every_check_fails_on_the_untouched_stub(name):
    exercise = EXERCISES[name]
    results = grade(exercise, load_file(stub_path(name), f"stub_{name}"))
    assert [result.check.name for result in results] == [check.name for check in exercise.checks]
    for result in results:
        assert not result.passed, result.check.name
        assert result.not_implemented, (result.check.name, result.message)  # failed at a stub, not by accident


@pytest.mark.parametrize("name", list(EXERCISES))
def test_every_check_passes_on_minclips_implementation(name, minclip_dir):
    learner = load_file(minclip_dir / f"{name}.py", f"reference_{name}")
    failures = [(r.check.name, r.message) for r in grade(EXERCISES[name], learner) if not r.passed]
    assert failures == []


@pytest.mark.parametrize("name", list(EXERCISES))
def test_stub_presents_every_function_with_a_docstring_and_banners(name):
    exercise = EXERCISES[name]
    source = stub_path(name).read_text()
    tree = ast.parse(source)
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert ast.get_docstring(tree) and f"python -m course check {name}" in ast.get_docstring(tree)
    assert list(functions) == list(exercise.functions)
    lines = source.splitlines()
    starts = [node.lineno - 1 for node in functions.values()] + [len(lines)]
    for node, start, end in zip(functions.values(), starts, starts[1:]):
        assert ast.get_docstring(node), node.name
        body = "\n".join(lines[start:end])  # the def up to the next one: the END banner is a trailing comment
        assert body.count("# TODO") == body.count("# END OF YOUR CODE") == 1, node.name
        assert body.index("# TODO") < body.index("raise NotImplementedError") < body.index("# END OF YOUR CODE")
    assert len(exercise.checks) >= 4
    assert len({check.name for check in exercise.checks}) == len(exercise.checks)
    assert all(check.hint and check.description for check in exercise.checks)


def test_every_reference_file_and_lesson_exists():
    for exercise in EXERCISES.values():
        assert (ROOT / exercise.reference).is_file(), exercise.reference
        assert exercise.lesson in (ROOT / "course" / "README.md").read_text(), exercise.lesson


# ----------------------------------------------------------------------------------------------------------------------
# The learner's mistakes become reports


def one_check_exercise(run) -> Exercise:
    exercise = Exercise("toy", "a toy exercise", "00_welcome", "minclip/loss.py", ("double",))
    exercise.checks.append(Check("doubles", "double doubles", "multiply by 2", run))
    return exercise


def check_double(learner):
    x = torch.arange(3.0)
    answer = call(function(learner, "double"), x)
    if not torch.equal(answer, 2 * torch.arange(3.0)):
        raise Wrong(f"double({x}) gave {answer}")


@pytest.mark.parametrize("body, message", [
    ("return x * 3", "double(tensor([0., 1., 2.])) gave tensor([0., 3., 6.])"),
    ("x *= 2\n    return x", "`double` changed its input `x` in place"),
    ("return x.view(7)", "your code raised RuntimeError: shape '[7]' is invalid for input of size 3 "
                         "(toy.py line 2, in double: `return x.view(7)`)"),
    ("raise NotImplementedError", "not implemented yet: `double` still raises NotImplementedError"),
    ("import sys\n    sys.exit(3)", "your code raised SystemExit: 3"),
])
def test_wrong_answers_crashes_and_stubs_are_reported(tmp_path, body, message):
    learner = load_file(write(tmp_path, "toy", f"def double(x):\n    {body}\n"), "toy")
    [result] = grade(one_check_exercise(check_double), learner)
    assert not result.passed
    assert result.message.startswith(message)


def test_an_endless_loop_is_stopped_and_located(tmp_path):
    learner = load_file(write(tmp_path, "toy", "def double(x):\n    while True:\n        pass\n"), "toy")
    exercise = one_check_exercise(check_double)
    exercise.checks.append(Check("again", "again", "", check_double))
    first, second = grade(exercise, learner, time_limit_s=0.3)
    assert not first.passed and not second.passed
    assert first.message.startswith("gave no answer within 0.3 s (it was running line 2 of double)")


def test_a_missing_function_is_named(tmp_path):
    learner = load_file(write(tmp_path, "toy", "def triple(x):\n    return 3 * x\n"), "toy")
    [result] = grade(one_check_exercise(check_double), learner)
    assert result.message == "your file defines no function named `double`"


@pytest.mark.parametrize("source, message", [
    ("def double(x)\n    return x\n", r"could not run your file: SyntaxError: expected ':' \(line 1\)"),
    ("import no_such_module_here\n", "could not run your file: ModuleNotFoundError: No module named "
                                     "'no_such_module_here'"),
])
def test_a_file_that_does_not_run_is_a_load_error(tmp_path, source, message):
    with pytest.raises(LoadError, match=message):
        load_file(write(tmp_path, "toy", source), "toy")
    with pytest.raises(LoadError, match="no file at"):
        load_file(tmp_path / "absent.py", "absent")


CLASSIC_MISTAKES = [  # (exercise, a function redefined with a classic mistake, what the report must say)
    ("attention", """
        import math
        def scaled_dot_product_attention(q, k, v, mask=None):
            weights = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
            return weights @ v, weights
     """, "your weights are softmax(q @ k.T) without the 1 / sqrt(d) scaling"),
    ("text_pooling", """
        def first_eot_index(tokens, eot_token_id):
            return tokens.argmax(dim=1)
     """, "your positions are tokens.argmax(dim=1)"),
    ("patchify", """
        def vit_tokens(images, conv_weight, class_embedding, positional_embedding):
            x = patch_embed(images, conv_weight)
            return torch.cat([x, class_embedding.expand(len(x), 1, -1)], dim=1) + positional_embedding
     """, "your class token is token 4"),
    ("infonce", """
        def clip_logits(image_features, text_features, logit_scale):
            logits = logit_scale * similarity_matrix(image_features, text_features)
            return logits, logits.T
     """, "your logits are scaled by logit_scale itself, not by its exponential"),
    ("infonce", """
        import torch.nn.functional as F
        def clip_loss(image_features, text_features, logit_scale):
            logits = logit_scale * image_features @ text_features.T
            return F.cross_entropy(logits, torch.arange(len(logits)))
     """, "your loss equals only the image->text direction (rows)"),
    ("training", """
        def training_step(model, images, tokens, optimizer, grad_clip):
            loss = clip_loss(model.encode_image(images, normalize=True), model.encode_text(tokens, normalize=True),
                             model.logit_scale.exp())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()  # and no clamp of logit_scale
            return loss.item()
     """, "after step 1, logit_scale is 5.1"),
    ("zero_shot", """
        import torch.nn.functional as F
        def build_classifier(encode_texts, classnames, templates):
            captions = [template.format(name) for name in classnames for template in templates]
            features = encode_texts(captions).view(len(classnames), len(templates), -1)
            return F.normalize(features.mean(dim=1), dim=-1)
     """, "you averaged the raw features"),
    ("negclip", """
        import torch.nn.functional as F
        def negclip_loss(image_features, text_features, foil_features, logit_scale):
            labels = torch.arange(len(image_features))
            own = (image_features * foil_features).sum(dim=1, keepdim=True)  # each image's own foil only
            logits = logit_scale * torch.cat([image_features @ text_features.T, own], dim=1)
            return (F.cross_entropy(logits, labels) + F.cross_entropy(logit_scale * text_features @ image_features.T,
                                                                      labels)) / 2
     """, "your loss equals each image against its own row's foil only"),
    ("negclip", """
        def negclip_loss(image_features, text_features, foil_features, logit_scale):
            return clip_loss(image_features, text_features, logit_scale)
     """, "your loss equals plain InfoNCE: the foils are not used"),
    ("negclip", """
        def usable_foils(captions, foils):
            return [row for row, foil in enumerate(foils) if foil is not None and foil not in captions]
     """, "usable_foils(['a red circle', 'a blue square', 'a red square'], ['a blue circle', 'A red  square', None]) "
         "gave [0, 1], expected [0]"),
]


@pytest.mark.parametrize("name, mistake, message", CLASSIC_MISTAKES)
def test_classic_mistakes_are_named(tmp_path, name, mistake, message):
    source = "import torch\n" + textwrap.dedent(MINCLIP_AS_LEARNER[name]) + textwrap.dedent(mistake)
    learner = load_file(write(tmp_path, name, source), name)
    messages = [result.message for result in grade(EXERCISES[name], learner) if not result.passed]
    assert any(text.startswith(message) for text in messages), messages


def test_grading_leaves_the_learners_random_state_alone(minclip_dir):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    grade(EXERCISES["text_pooling"], load_file(minclip_dir / "text_pooling.py", "reference_text_pooling"))
    assert torch.equal(torch.rand(3), expected)


# ----------------------------------------------------------------------------------------------------------------------
# The command line


def test_list_names_every_exercise_lesson_and_function(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for exercise in EXERCISES.values():
        line = next(line for line in out.splitlines() if line.startswith(exercise.name + " "))
        assert exercise.lesson in line and exercise.reference in line
        assert all(function_name in line for function_name in exercise.functions)


def test_check_on_the_stub_fails_with_a_report(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    stub_path("recall")
    assert main(["check", "recall"]) == 1
    out = capsys.readouterr().out
    assert "grading course/exercises/recall.py " in out
    assert out.count("FAIL  ") == len(EXERCISES["recall"].checks)
    assert "not implemented yet: `text_to_image_recall` still raises NotImplementedError" in out
    assert f"recall: 0 of {len(EXERCISES['recall'].checks)} checks passed" in out


def test_check_with_file_passes_and_notes_code_imported_from_minclip(capsys, minclip_dir):
    assert main(["check", "text_pooling", "--file", str(minclip_dir / "text_pooling.py")]) == 0
    out = capsys.readouterr().out
    checks = len(EXERCISES["text_pooling"].checks)
    assert out.count("PASS  ") == checks and "FAIL" not in out
    assert "note: `causal_mask` is imported from minclip.attention, so this grades minclip's code, not yours" in out
    assert f"text_pooling: {checks} of {checks} checks passed" in out


def test_check_a_failing_answer_prints_the_hint(tmp_path, capsys):
    path = write(tmp_path, "recall", MINCLIP_AS_LEARNER["recall"].replace('["text_to_image"]', '["image_to_text"]'))
    assert main(["check", "recall", "--file", str(path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  t2i_one_caption_per_image" in out
    assert "hint: for caption c, its image's score is" in out


def test_check_all_in_a_folder_summarises_and_fails_on_missing_files(tmp_path, capsys):
    write(tmp_path, "recall", MINCLIP_AS_LEARNER["recall"])  # the only exercise handed in
    assert main(["check", "all", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    summary = [line.split() for line in out[out.index("summary"):].splitlines()[1:]]
    expected = [[name, f"0/{len(exercise.checks)}", "FAIL"] for name, exercise in EXERCISES.items()]
    expected[list(EXERCISES).index("recall")] = ["recall", "7/7", "PASS"]
    assert summary == expected
    assert out.count("FAIL  no file at") == len(EXERCISES) - 1


@pytest.mark.parametrize("argv, message", [
    (["check", "attenion"], "unknown exercise 'attenion'"),
    (["check", "recall", "bpe", "--file", "x.py"], "--file grades one file"),
    (["check"], "the following arguments are required: NAME"),
    ([], "the following arguments are required"),
])
def test_bad_command_lines_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_python_dash_m_course_runs_and_sets_the_exit_status(minclip_dir):
    command = [sys.executable, "-m", "course", "check", "text_pooling", "--file", str(minclip_dir / "text_pooling.py")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "text_pooling: 6 of 6 checks passed" in done.stdout


# ----------------------------------------------------------------------------------------------------------------------
# Each file is graded in a child process: nothing it does can stop the grader or fake its verdict

RECALL_THEN = MINCLIP_AS_LEARNER["recall"]  # a passing recall file, to which each case below adds its trick


@pytest.mark.parametrize("top_level, message", [
    ("while True:\n    pass\n", "your file did not finish running within 1 s (it was running line"),
    ("import sys\nsys.exit(0)\n", "could not run your file: SystemExit: 0"),
    ("import os\nos._exit(0)\n", "the process running your file ended with exit status 0 before reporting (does "
                                 "your code call os._exit or sys.exit?) while loading it"),
    ("import ctypes\nctypes.string_at(0)\n", "the process running your file crashed (SIGSEGV"),
])
def test_a_file_that_hangs_exits_or_crashes_while_loading_fails_clearly(tmp_path, capsys, top_level, message):
    path = write(tmp_path, "recall", textwrap.dedent(RECALL_THEN) + top_level)
    assert main(["check", "recall", "--file", str(path), "--time-limit", "1"]) == 1
    out = capsys.readouterr().out
    assert message in " ".join(out.split()) and "recall: 0 of 7 checks passed (the file could not be graded)" in out


def test_printing_a_report_and_exiting_with_success_fools_nobody(tmp_path, capsys):
    path = write(tmp_path, "recall", "import os\nprint('PASSED')\nprint('recall: 7 of 7 checks passed')\nos._exit(0)\n")
    assert main(["check", "recall", "--file", str(path)]) == 1
    out = capsys.readouterr().out
    assert "your file printed (its output, not the grader's):\n  | PASSED\n  | recall: 7 of 7 checks passed" in out
    assert out.rstrip().endswith("recall: 0 of 7 checks passed (the file could not be graded)")


def test_exiting_during_a_check_fails_that_check_and_the_rest(tmp_path, capsys):
    source = textwrap.dedent(RECALL_THEN) + "import os\ntext_to_image_recall = lambda *args: os._exit(0)\n"
    assert main(["check", "recall", "--file", str(write(tmp_path, "recall", source))]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "the process grading your file ended with exit status 0 before reporting" in out
    assert "during this check" in out and "not run: the process grading your file had ended" in out
    assert "recall: 0 of 7 checks passed" in out


def test_a_loop_that_ignores_the_time_limit_is_killed(tmp_path, capsys, monkeypatch):
    from course.checks import isolate

    monkeypatch.setattr(isolate, "STARTUP_S", 2)
    source = "import signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    time.sleep(0.05)\n"
    assert main(["check", "recall", "--file", str(write(tmp_path, "recall", source)), "--time-limit", "0.2"]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "gave no answer within 3.6 s and was stopped" in out and "while loading it" in out


def test_lines_written_into_the_result_channel_without_its_nonce_are_rejected(tmp_path, capsys):
    forge = textwrap.dedent(RECALL_THEN) + textwrap.dedent('''
        import gc, json
        for thing in gc.get_objects():
            if type(thing).__name__ == "_Reporter":
                thing._file.write(json.dumps({"nonce": "guess", "event": "done"}) + "\\n")
    ''')
    assert main(["check", "recall", "--file", str(write(tmp_path, "recall", forge))]) == 1
    assert "the grader's result channel holds lines it did not write" in capsys.readouterr().out


def test_load_file_stops_an_endless_top_level_loop(tmp_path):
    with pytest.raises(LoadError, match=r"did not finish running within 0.2 s \(it was running line 2\)"):
        load_file(write(tmp_path, "toy", "x = 1\nwhile x:\n    pass\n"), "toy", time_limit_s=0.2)


@pytest.mark.parametrize("option, message", [
    (["--time-limit", "0"], "--time-limit must be a number of seconds in (0, 600], got 0"),
    (["--time-limit", "-1"], "--time-limit must be a number of seconds in (0, 600], got -1"),
    (["--time-limit", "nan"], "got nan"),
    (["--time-limit", "inf"], "got inf"),
    (["--dir", "no_such_folder"], "--dir no_such_folder is not a folder"),
])
def test_grader_options_are_checked(option, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "recall", *option])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
