# The README's two commands: `make study` and `make test`. Both create .venv with what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU machines pin torch through the constraint file; set UFPA_CPU=0 to keep a CUDA torch, 1 to force the pin.
UFPA_CPU ?= $(if $(shell command -v nvidia-smi 2>/dev/null),0,1)
CONSTRAINT := $(if $(filter 1,$(UFPA_CPU)),-c environments/constraints-cpu.txt,)
NOTEBOOKS := notebooks/01_derivation.ipynb notebooks/02_numerical_verification.ipynb \
  notebooks/03_misalignment_in_models.ipynb notebooks/04_data_and_codecs.ipynb notebooks/05_train.ipynb \
  notebooks/06_figures_and_tables.ipynb
# the study executes 01-04 and, for 05, the runs of the sweep profile (each into reports/runs/); `make report` 05 and 06
STUDY_NOTEBOOKS := $(filter-out notebooks/05_train.ipynb notebooks/06_figures_and_tables.ipynb,$(NOTEBOOKS))
PROFILE ?= profiles/cpu.yaml
JOBS ?= 2
STAMP := $(VENV)/.installed

.PHONY: study study-controls study-codecs study-learned study-converged study-markers study-markers-controls study-markers-corners study-markers-codecs sweep report test venv lint notebooks clean gpu-check

venv: $(STAMP)

$(STAMP): pyproject.toml environments/constraints-cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(CONSTRAINT) -e '.[dev]'
	touch $@

# The study: SynthPose (made once in data/), the training sweep of PROFILE (resumable: runs with a record are skipped),
# then notebooks 01-04 with papermill into reports/notebooks/ (figures and records land in reports/; run by hand,
# the notebooks write to scratch/).
study: sweep
	@mkdir -p reports/notebooks
	@for nb in $(STUDY_NOTEBOOKS); do \
	  echo "papermill $$nb"; \
	  case $$nb in *01_derivation*) where="";; *) where="-p reports ../reports";; esac; \
	  $(BIN)/papermill --no-progress-bar --cwd notebooks $$nb reports/notebooks/$$(basename $$nb) $$where || exit 1; \
	done

# The report: notebook 05 on one finished run of PROFILE and notebook 06 (tables and figures from the records) into
# reports/notebooks/, then the page reports/study.html, checked in headless Chromium where one is installed.
report: $(STAMP)
	$(BIN)/python -m ufpa report --profile $(PROFILE)

sweep: $(STAMP)
	$(BIN)/python -m ufpa sweep $(PROFILE) --jobs $(JOBS)

# The rest of the CPU study's design (issue 21), each about 2 h on 2 cores: the controls that split the primary's first
# step, and the codec axis; and the learned aligner against zero-cost alignment (issue 22, about 40 min). Their
# records join reports/ (their designs join the secondary family); `make report` after.
study-controls: $(STAMP)
	$(BIN)/python -m ufpa sweep profiles/cpu_controls.yaml --jobs $(JOBS)

study-codecs: $(STAMP)
	$(BIN)/python -m ufpa sweep profiles/cpu_codecs.yaml --jobs $(JOBS)

study-learned: $(STAMP)
	$(BIN)/python -m ufpa sweep profiles/cpu_learned.yaml --jobs $(JOBS)

# The first converged design (issues 21, 22): cpu.yaml's design and the learned arm at 144 epochs, where the
# baseline's val AP plateaus, in reports/converged/. Stopped after seed 0 (see the profile: the preset's head is a
# bottleneck); kept so that its registration and records can be checked. Stop a sweep with the stop file it names.
study-converged: $(STAMP)
	$(BIN)/python -m ufpa sweep profiles/cpu_converged.yaml --jobs $(JOBS) --keep

# The converged study where localisation limits accuracy (issues 21, 22): 'markers' data, the official UFPA head (the
# tiny preset's own head is an 8-channel bottleneck that loses wrists), 144 epochs, four arms, 7 seeds; about 10 h on
# 2 cores, resumed seed by seed in reports/markers/. `make report PROFILE=profiles/cpu_markers.yaml` after.
study-markers: $(STAMP)
	$(BIN)/python -m ufpa sweep profiles/cpu_markers.yaml --jobs $(JOBS) --keep

# The controls that split ufpa's change in that setting (issue 21): bilinear, bilinear_corners, ufpa_any at 96x64
# and 97x65, beside the markers study's baseline and zero-padding runs; about 10 h on 2 cores after the markers study.
study-markers-controls: $(STAMP)
	$(BIN)/python -m ufpa sweep profiles/cpu_markers_controls.yaml --jobs $(JOBS) --keep

# The confirmatory test of the corner-alignment step on EPE on found keypoints (issue 21): baseline and
# bilinear_corners at seeds 7-12, registered before they trained; about 2.7 h on 2 cores.
study-markers-corners: $(STAMP)
	$(BIN)/python -m ufpa sweep profiles/cpu_markers_corners.yaml --jobs $(JOBS) --keep

# The codec axis in that setting (issue 21): msra and dark on the same widened network (head wide_heatmap) beside the
# markers study's udp pair, judged on EPE on found keypoints; about 10 h on 2 cores. After a training-code change,
# `python -m ufpa reproduce` one markers record first, or the udp pair is re-trained (see the profile).
study-markers-codecs: $(STAMP)
	$(BIN)/python -m ufpa sweep profiles/cpu_markers_codecs.yaml --jobs $(JOBS) --keep

# Unit tests, then nbval (strict) on the committed notebooks; nbval writes its figures and records to a temp dir.
test: $(STAMP)
	$(BIN)/python -m pytest -q
	UFPA_REPORTS_DIR=$$(mktemp -d) $(BIN)/python -m pytest -q -p no:cacheprovider --nbval --nbval-current-env \
	  --nbval-sanitize-with tests/nbval_sanitize.cfg $(NOTEBOOKS)

# The GPU measurements (at most 8 minutes on one GPU, no network): bench eager and CUDA graph, 3 min of HRNet-W32
# training; records in reports/gpu_check/results/. Refuses a machine without CUDA.
gpu-check: $(STAMP)
	$(BIN)/python -m ufpa gpu-check --out reports/gpu_check

lint: $(STAMP)
	$(BIN)/ruff check ufpa tests

# Re-execute the committed notebooks in place after changing ufpa/ (their outputs are what nbval compares).
notebooks: $(STAMP)
	@for nb in $(NOTEBOOKS); do \
	  UFPA_REPORTS_DIR=$$(mktemp -d) $(BIN)/jupyter nbconvert --to notebook --execute --inplace $$nb || exit 1; \
	done

clean:
	rm -rf $(VENV) .pytest_cache
