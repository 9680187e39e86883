"""Model sampling against ComfyUI: the expected numbers below were computed by running ComfyUI's own
comfy/model_sampling.py (commit a125cd84, the version of the project's reference renders) on the CPU in a
throwaway script; they must agree to 1e-6 (relative for the large sigmas). Then how each family's diffusers
scheduler config maps onto ComfyUI's sampling."""
import json
from pathlib import Path

import pytest
import torch

from diffusion.sampling.model_sampling import (
    EDM,
    EPS,
    FLOW,
    IMG_TO_IMG,
    LCM,
    PREDICTIONS,
    V_PREDICTION,
    X0,
    BetaSchedule,
    ContinuousEDMModelSampling,
    ContinuousVModelSampling,
    DiscreteFlowModelSampling,
    DiscreteModelSampling,
    DistilledDiscreteModelSampling,
    FluxModelSampling,
    ModelSampling,
)

FAMILIES = Path(__file__).resolve().parents[2] / "diffusion" / "families"


MODELS: dict[str, ModelSampling] = {
    "sd1": DiscreteModelSampling(),
    "zsnr": DiscreteModelSampling(prediction=V_PREDICTION, zsnr=True),
    "lcm": DistilledDiscreteModelSampling(),
    "sd3": DiscreteFlowModelSampling(shift=3.0),
    "aura": DiscreteFlowModelSampling(shift=1.73, multiplier=1.0),
    "flux": FluxModelSampling(),
    "flux768": FluxModelSampling.for_image_size(768, 1360),
    "playground": ContinuousEDMModelSampling(EDM, sigma_min=0.002, sigma_max=80.0, sigma_data=0.5),
    "contv": ContinuousVModelSampling(sigma_min=0.03, sigma_max=500.0),  # Stable Audio's bounds
    "sqrt_linear": DiscreteModelSampling(BetaSchedule("sqrt_linear", 0.0001, 0.02)),
    "cosine": DiscreteModelSampling(BetaSchedule("cosine")),
}
FLOW_TIMES = ("aura", "flux", "flux768", "contv")  # timesteps in [0, 1]


def assert_matches(actual, expected):
    actual = torch.as_tensor(actual, dtype=torch.float64)
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=1e-6)


FLUX_768x1360_MU = 1.1472916666666666
TABLES = {
    'sd1': [0.02916715853, 0.04131441191, 0.09829107672, 0.3439312279, 1.61288619, 1.618278861, 14.52627563,
        14.61464119, 1000],
    'zsnr': [0.02916715853, 0.04206756502, 0.1015456021, 0.35735026, 1.768080235, 1.774557471, 2254.238037, 4518.763672,
        1000],
    'lcm': [0.1344506741, 0.1963027269, 0.6175960898, 50],
    'sd3': [0.002994012088, 0.005976095796, 0.03228962794, 0.2520798743, 0.75, 0.75074929, 0.9996663928, 1, 1000],
    'aura': [0.001728738076, 0.003454956226, 0.01887840591, 0.1627317965, 0.6336996555, 0.6346275806, 0.9994217753, 1,
        1000],
    'flux': [0.0003157511528, 0.0006313660415, 0.003465784248, 0.03121728078, 0.1425293535, 0.1427865773, 0.2595447302,
        0.2597584128, 10000],
    'flux768': [0.000314897421, 0.0006296595675, 0.00345644285, 0.03113547713, 0.1421986669, 0.1424554139, 0.2590245903,
        0.2592379749, 10000],
    'playground': [0.001999999862, 0.002021327149, 0.002223804593, 0.005776924081, 0.3978840709, 0.4021271765,
        79.15590668, 80, 1000],
    'contv': [0.02999999933, 0.03029334731, 0.03306602314, 0.07938322425, 3.854187012, 3.891871691, 495.1582336,
        500.000061, 1000],
    'sqrt_linear': [0.0100004999, 0.01483092364, 0.04688549042, 0.3422597051, 3.424136639, 3.442967176, 155.8251953,
        157.4072876, 1000],
    'cosine': [0.006425412837, 0.009350492619, 0.02686292119, 0.1710435599, 1.012389541, 1.015550494, 641.6623535,
        20291.16992, 1000],
}
TABLE_INDICES = [0, 1, 10, 100, 499, 500, 998, 999]
TIMESTEPS = {
    'sd1': [999, 697, 252, 169, 0, 16],
    'zsnr': [880, 653, 239, 160, 0, 15],
    'lcm': [999, 699, 259, 179, 19, 19],
    'sd3': [1000, 900, 700, 500, 100, 3],
    'aura': [1, 0.8999999762, 0.6999999881, 0.5, 0.1000000015, 0.003000000026],
    'flux': [1, 0.8999999762, 0.6999999881, 0.5, 0.1000000015, 0.003000000026],
    'flux768': [1, 0.8999999762, 0.6999999881, 0.5, 0.1000000015, 0.003000000026],
    'playground': [0.6705052853, 0.2984806001, -0.0891687423, -0.1732867956, -0.8833966255, -0.5230810642],
    'contv': [0.9565072656, 0.8126844168, 0.3888002038, 0.2951672375, 0.01858401671, 0.07816372812],
    'sqrt_linear': [727, 492, 194, 144, 5, 34],
    'cosine': [955, 810, 383, 289, 11, 70],
}
SIGMAS_AT = {
    'sd1': [0.02916716039, 0.04131440818, 0.1005327031, 0.6964478493, 14.60578156, 14.61464024, 14.61464024],
    'zsnr': [0.02916716039, 0.04206756502, 0.1038762778, 0.730537951, 4215.266113, 4518.763672, 4518.763672],
    'lcm': [0.1344506592, 0.1344506592, 0.1344506592, 0.6962213516, 14.60590363, 14.61464024, 14.61464024],
    'sd3': [0, 0.002994012088, 0.03085210547, 0.5003332496, 0.9996331334, 0.9996663928, 1.058823586],
    'aura': [0, 0.001728738076, 0.01802682318, 0.3660598099, 0.9993638396, 0.9994217753, 1.106609941],
    'flux': [0, 0.003151391633, 0.03242621198, 0.5131770968, 0.999651432, 0.9996830821, 1.055712938],
    'flux768': [0, 0.003142894944, 0.03234134614, 0.5125005245, 0.9996504784, 0.9996823072, 1.05587256],
    'playground': [0.002478752285, 0.1353352815, 1, 3.320116997, 54.59814835, 79.99786377],
    'contv': [0, 0.001570797758, 0.01649485715, 0.4146737456, 578.7383423, 636.6270142, -3.07768178],
    'sqrt_linear': [0.0100004999, 0.01483092178, 0.04850545898, 0.9593104124, 157.2483673, 157.4072571, 157.4072571],
    'cosine': [0.006425412837, 0.009350494482, 0.02770484984, 0.4272971153, 14366.25781, 20291.16992, 20291.16992],
}
PERCENT_TO_SIGMA = {
    'sd1': [999999999.9, 14.60578918, 4.086081028, 1.61558032, 0.3437048197, 0],
    'zsnr': [999999999.9, 4215.442871, 5.40662241, 1.771315813, 0.357113421, 0],
    'lcm': [999999999.9, 14.60590363, 4.087230682, 1.615593314, 0.3435770869, 0],
    'sd3': [1, 0.9999666644, 0.9, 0.75, 0.25, 0],
    'aura': [1, 0.9999421941, 0.8384491115, 0.6336996337, 0.1612301957, 0],
    'flux': [1, 0.9999683342, 0.9045307667, 0.7595109169, 0.2597584142, 0],
    'flux768': [1, 0.9999682483, 0.9042966326, 0.7590158812, 0.259237984, 0],
    'playground': [999999999.9, 79.91527182, 5.656854152, 0.3999999862, 0.005770799266, 0],
    'contv': [999999999.9, 499.5142388, 44.00559062, 3.872983539, 0.07930601471, 0],
    'sqrt_linear': [999999999.9, 157.2485199, 17.27979469, 3.433539152, 0.3419149816, 0],
    'cosine': [999999999.9, 14369.28613, 2.438142061, 1.013968825, 0.170882076, 0],
}
PERCENTS = [0.0, 0.0001, 0.25, 0.5, 0.9, 1.0]
PREDICTIONS_EXPECTED = {
    'eps': {'input': [[-0.1279970706, -0.1109308004], [0.1118033975, 0.3354101777]], 'denoised': [[12.73960018,
        11.04098701], [0.09166669101, 0.2750000358]], 'noise': [[-16.48960114, -14.29098701], [0.1583333015,
        0.4749999642]], 'max_noise': [[-16.52377319, -14.32060242], [0.1995355487, 0.5986067653]], 'inverse': [[-1.875,
        -1.625], [0.125, 0.375]]},
    'v_prediction': {'input': [[-0.1279970706, -0.1109308004], [0.1118033975, 0.3354101777]], 'denoised':
        [[0.9889295101, 0.8570722342], [0.07018578053, 0.2105573118]], 'noise': [[-16.48960114, -14.29098701],
        [0.1583333015, 0.4749999642]], 'max_noise': [[-16.52377319, -14.32060242], [0.1995355487, 0.5986067653]],
        'inverse': [[-1.875, -1.625], [0.125, 0.375]]},
    'edm': {'input': [[-0.128221333, -0.1111251637], [0.1767766923, 0.5303301215]], 'denoised': [[-0.5018997192,
        -0.4349797666], [0.08607020974, 0.258210659]], 'noise': [[-16.48960114, -14.29098701], [0.1583333015,
        0.4749999642]], 'max_noise': [[-16.52377319, -14.32060242], [0.1995355487, 0.5986067653]], 'inverse': [[-1.875,
        -1.625], [0.125, 0.375]]},
    'lcm': {'input': [[-0.1279970706, -0.1109308004], [0.1118033975, 0.3354101777]], 'denoised': [[12.73960018,
        11.04098701], [0.09166669101, 0.2750000358]], 'noise': [[-16.48960114, -14.29098701], [0.1583333015,
        0.4749999642]], 'max_noise': [[-16.52377319, -14.32060242], [0.1995355487, 0.5986067653]], 'inverse': [[-1.875,
        -1.625], [0.125, 0.375]]},
    'flow': {'input': [[-1.875, -1.625], [0.125, 0.375]], 'denoised': [[-0.9750000238, -0.8450000286], [0.09166669101,
        0.2750000358]], 'noise': [[-1.087499976, -0.9424999952], [0.09583330899, 0.2874999642]], 'max_noise':
        [[-1.087499976, -0.9424999952], [0.09583330899, 0.2874999642]], 'inverse': [[-18.74999619, -16.24999619], [0.25,
        0.75]]},
    'x0': {'input': [[-0.1279970706, -0.1109308004], [0.1118033975, 0.3354101777]], 'denoised': [[-1, -0.8666666746],
        [0.06666661799, 0.1999999583]], 'noise': [[-16.48960114, -14.29098701], [0.1583333015, 0.4749999642]],
        'max_noise': [[-16.52377319, -14.32060242], [0.1995355487, 0.5986067653]], 'inverse': [[-1.875, -1.625], [0.125,
        0.375]]},
    'img_to_img': {'input': [[-1.875, -1.625], [0.125, 0.375]], 'denoised': [[-1, -0.8666666746], [0.06666661799,
        0.1999999583]], 'noise': [[-16.48960114, -14.29098701], [0.1583333015, 0.4749999642]], 'max_noise':
        [[-16.52377319, -14.32060242], [0.1995355487, 0.5986067653]], 'inverse': [[-1.875, -1.625], [0.125, 0.375]]},
}


PROBE_SIGMAS = [14.6146, 3.3, 0.7, 0.5, 0.0292, 0.1234]
PROBE_FLOW_SIGMAS = [1.0, 0.9, 0.7, 0.5, 0.1, 0.003]
PROBE_TIMESTEPS = [0.0, 1.0, 10.5, 250.25, 998.9, 999.0, 1200.0]
PROBE_EDM_TIMESTEPS = [-1.5, -0.5, 0.0, 0.3, 1.0, 1.0955]


@pytest.mark.parametrize("kind", list(TABLES))
def test_sigma_tables_match_comfyui(kind):
    *values, length = TABLES[kind]
    table = MODELS[kind].sigmas
    assert table.dtype == torch.float32 and len(table) == length
    assert_matches(table[[i for i in TABLE_INDICES if i < length]], values)
    assert (table[1:] > table[:-1]).all()
    assert MODELS[kind].sigma_min.shape == () and float(MODELS[kind].sigma_max) == float(table[-1])


@pytest.mark.parametrize("kind", list(TIMESTEPS))
def test_timesteps_match_comfyui(kind):
    flow = kind in ("sd3", "aura", "flux", "flux768")
    assert_matches(MODELS[kind].timestep(torch.tensor(PROBE_FLOW_SIGMAS if flow else PROBE_SIGMAS)), TIMESTEPS[kind])


@pytest.mark.parametrize("kind", list(SIGMAS_AT))
def test_sigmas_of_timesteps_match_comfyui(kind):
    if kind == "playground":
        timesteps = torch.tensor(PROBE_EDM_TIMESTEPS)
    else:
        timesteps = torch.tensor(PROBE_TIMESTEPS) / (1000 if kind in FLOW_TIMES else 1)
    assert_matches(MODELS[kind].sigma(timesteps), SIGMAS_AT[kind])


@pytest.mark.parametrize("kind", list(PERCENT_TO_SIGMA))
def test_percent_to_sigma_matches_comfyui(kind):
    assert_matches([MODELS[kind].percent_to_sigma(p) for p in PERCENTS], PERCENT_TO_SIGMA[kind])


PREDICTION_MODELS: dict[str, ModelSampling] = {
    "eps": MODELS["sd1"], "v_prediction": DiscreteModelSampling(prediction=V_PREDICTION), "edm": MODELS["playground"],
    "lcm": MODELS["lcm"], "flow": MODELS["sd3"], "x0": DiscreteModelSampling(prediction=X0),
    "img_to_img": DiscreteModelSampling(prediction=IMG_TO_IMG),
}


@pytest.mark.parametrize("name", list(PREDICTIONS_EXPECTED))
def test_predictions_match_comfyui(name):
    sampling = PREDICTION_MODELS[name]
    latents = (torch.arange(16, dtype=torch.float32).view(2, 2, 2, 2) - 7.5) / 4
    output = torch.linspace(-1, 1, 16).view(2, 2, 2, 2)
    sigma = torch.tensor([0.9, 0.5] if name == "flow" else [14.6146, 0.5])
    expected = PREDICTIONS_EXPECTED[name]
    assert_matches(sampling.calculate_input(sigma, latents)[:, 0, 0], expected["input"])
    assert_matches(sampling.calculate_denoised(sigma, output, latents)[:, 0, 0], expected["denoised"])
    assert_matches(sampling.noise_scaling(sigma, output, latents)[:, 0, 0], expected["noise"])
    assert_matches(sampling.noise_scaling(sigma, output, latents, max_denoise=True)[:, 0, 0], expected["max_noise"])
    assert_matches(sampling.inverse_noise_scaling(sigma, latents)[:, 0, 0], expected["inverse"])


def test_one_sigma_serves_the_whole_batch():
    latents = torch.randn(3, 4, 2, 2)
    one, per_row = torch.tensor([0.7]), torch.tensor([0.7, 0.7, 0.7])
    for sampling in (MODELS["sd1"], MODELS["sd3"]):
        assert torch.equal(sampling.calculate_input(one, latents), sampling.calculate_input(per_row, latents))


def test_predictions_are_known_by_comfyuis_option_names():
    assert PREDICTIONS == {"eps": EPS, "v_prediction": V_PREDICTION, "edm": EDM, "x0": X0, "img_to_img": IMG_TO_IMG,
                           "lcm": LCM, "flow": FLOW}
    assert MODELS["sd3"].is_flow_matching and MODELS["flux"].is_flow_matching
    assert not MODELS["sd1"].is_flow_matching and not MODELS["playground"].is_flow_matching


def test_flux_mu_follows_the_image_size_as_model_sampling_flux_does():
    assert FluxModelSampling.for_image_size(768, 1360).mu == pytest.approx(FLUX_768x1360_MU, abs=1e-12)
    assert FluxModelSampling.for_image_size(1024, 1024).mu == pytest.approx(1.15, abs=1e-12)
    assert FluxModelSampling.for_image_size(256, 256).mu == pytest.approx(0.5, abs=1e-12)


def test_discrete_timesteps_and_sigmas_are_inverse_on_the_table():
    sampling = MODELS["sd1"]
    timesteps = torch.arange(0, 1000, 7)
    assert torch.equal(sampling.timestep(sampling.sigma(timesteps)), timesteps)
    # exp of the stored float32 log: the table's value to the last bit or two
    torch.testing.assert_close(sampling.sigma(timesteps.float()), sampling.sigmas[timesteps], rtol=1e-6, atol=0)


def test_max_denoise_is_starting_at_or_above_sigma_max():
    sampling = MODELS["sd1"]
    assert sampling.is_max_denoise(14.6146) and sampling.is_max_denoise(20.0)
    assert not sampling.is_max_denoise(14.5)


def _family_scheduler(path: str) -> dict:
    return json.loads((FAMILIES / path).read_text())["scheduler"]


@pytest.mark.parametrize("path", ["sd/sd1.json", "sd/sd2.json", "sdxl/config.json"])
def test_sd_family_configs_give_comfyuis_sd1_table(path):
    for config in (_family_scheduler(path), {k: v for k, v in _family_scheduler(path).items() if k != "_class_name"}):
        sampling = ModelSampling.from_scheduler_config(config)
        assert isinstance(sampling, DiscreteModelSampling) and sampling.prediction is EPS and not sampling.zsnr
        assert sampling.schedule == BetaSchedule("linear", 0.00085, 0.012, 1000)
        assert torch.equal(sampling.sigmas, MODELS["sd1"].sigmas)
    v_config = dict(_family_scheduler(path), prediction_type="v_prediction", rescale_betas_zero_snr=True)
    v_sampling = ModelSampling.from_scheduler_config(v_config)
    assert v_sampling.prediction is V_PREDICTION and torch.equal(v_sampling.sigmas, MODELS["zsnr"].sigmas)


def test_sd3_config_gives_comfyuis_sd3_flow():
    for config in (_family_scheduler("sd3/config.json"), {"num_train_timesteps": 1000, "shift": 3.0}):
        sampling = ModelSampling.from_scheduler_config(config)
        assert isinstance(sampling, DiscreteFlowModelSampling) and sampling.prediction is FLOW
        assert (sampling.shift, sampling.multiplier) == (3.0, 1000)
        assert torch.equal(sampling.sigmas, MODELS["sd3"].sigmas)


def test_flux_config_gives_comfyuis_default_flux_sampling():
    sampling = ModelSampling.from_scheduler_config(_family_scheduler("flux/config.json"))
    assert isinstance(sampling, FluxModelSampling) and sampling.mu == 1.15
    assert torch.equal(sampling.sigmas, MODELS["flux"].sigmas)


def test_flow_configs_without_dynamic_shifting_take_the_timestep_multiplier():
    schnell = {"_class_name": "FlowMatchEulerDiscreteScheduler", "base_shift": 0.5, "max_shift": 1.15,
               "num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False}
    sampling = ModelSampling.from_scheduler_config(schnell, flow_timestep_multiplier=1.0)
    assert isinstance(sampling, DiscreteFlowModelSampling) and (sampling.shift, sampling.multiplier) == (1.0, 1.0)
    aura = ModelSampling.from_scheduler_config({"shift": 1.73}, flow_timestep_multiplier=1.0)
    assert torch.equal(aura.sigmas, MODELS["aura"].sigmas)


def test_beta_based_configs_without_a_class_name_stay_discrete():
    dpm_solver = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                  "use_dynamic_shifting": False, "use_flow_sigmas": False}
    assert isinstance(ModelSampling.from_scheduler_config(dpm_solver), DiscreteModelSampling)


def test_diffusers_beta_names_map_onto_comfyuis():
    linear = ModelSampling.from_scheduler_config({"_class_name": "DDPMScheduler", "beta_schedule": "linear"})
    assert linear.schedule == BetaSchedule("sqrt_linear", 0.0001, 0.02, 1000)
    assert torch.equal(linear.sigmas, MODELS["sqrt_linear"].sigmas)
    sample = ModelSampling.from_scheduler_config({"beta_schedule": "scaled_linear", "beta_start": 0.00085,
                                                  "beta_end": 0.012, "prediction_type": "sample"})
    assert sample.prediction is X0


def test_trained_betas_replace_the_formula():
    betas = BetaSchedule("linear").betas()
    sampling = ModelSampling.from_scheduler_config({"trained_betas": betas.tolist(), "beta_schedule": "linear"})
    assert torch.equal(sampling.sigmas, MODELS["sd1"].sigmas)


def test_edm_configs_give_continuous_edm_sampling():
    playground = {"_class_name": "EDMDPMSolverMultistepScheduler", "sigma_min": 0.002, "sigma_max": 80.0,
                  "sigma_data": 0.5, "prediction_type": "epsilon"}
    sampling = ModelSampling.from_scheduler_config(playground)
    assert isinstance(sampling, ContinuousEDMModelSampling) and sampling.prediction is EDM
    assert sampling.sigma_data == 0.5 and torch.equal(sampling.sigmas, MODELS["playground"].sigmas)
    v_config = dict(playground, prediction_type="v_prediction")
    assert ModelSampling.from_scheduler_config(v_config).prediction is V_PREDICTION


def test_unsupported_configs_are_refused():
    with pytest.raises(ValueError, match="prediction_type"):
        ModelSampling.from_scheduler_config({"beta_schedule": "scaled_linear", "prediction_type": "noise"})
    with pytest.raises(ValueError, match="beta_schedule"):
        ModelSampling.from_scheduler_config({"beta_schedule": "sigmoid"})
