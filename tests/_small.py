"""Small runs of the course notebooks, for the tests that check that a notebook runs and shows
what it should rather than what it finds: the learner build with its stubs
(tests/test_exercises.py) and the browser (tests/test_browser.py). Per notebook, parameters
that keep a run to seconds while every cell still has images, texts and groups to work on; the
figures at full size are tests/test_notebooks.py's."""

SMALL_RUNS = {
    "01": {"n_images": 20, "batch_size": 20},
    "02": {"n_images": 40, "batch_size": 40},
    "03": {"n_images": 60, "batch_size": 60},
    "04": {"n_images": 8},
    "05": {"n_per_group": 10, "span_images": 60, "random_trials": 2},
    "06": {"n_images": 8, "batch_size": 8},
    "07": {"n_images": 40, "eval_images": 20, "top_k": 2, "seg_images": 4, "n_pairs": 3, "adv_scenes": 2,
           "batch_size": 20},
}
