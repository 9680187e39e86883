"""Sigma schedules against ComfyUI: the expected numbers below were computed by running ComfyUI's own scheduler
functions (commit a125cd84, the version of the project's reference renders) on the CPU in a throwaway script,
for SD1 (discrete eps), SD3 (flow, shift 3.0), FLUX (mu 1.15, its 1024x1024 shift) and a few others; they must
agree to 1e-6. Then the properties every KSampler scheduler keeps."""
import pytest
import torch

from diffusion.sampling.model_sampling import (
    EDM,
    V_PREDICTION,
    ContinuousEDMModelSampling,
    ContinuousVModelSampling,
    DiscreteFlowModelSampling,
    DiscreteModelSampling,
    DistilledDiscreteModelSampling,
    FluxModelSampling,
)
from diffusion.sampling.sigma_schedules import (
    GITS_NOISE_LEVELS,
    SCHEDULER_NAMES,
    align_your_steps_sigmas,
    basic_scheduler_sigmas,
    beta_sigmas,
    calculate_sigmas,
    exponential_sigmas,
    extend_intermediate_sigmas,
    flip_sigmas,
    gits_sigmas,
    karras_sigmas,
    kl_optimal_sigmas,
    ksampler_sigmas,
    laplace_sigmas,
    linear_quadratic_sigmas,
    polyexponential_sigmas,
    sampling_percent_to_sigma,
    sd_turbo_sigmas,
    set_first_sigma,
    split_sigmas,
    split_sigmas_denoise,
    vp_sigmas,
)

MODELS = {
    "sd1": DiscreteModelSampling(),
    "zsnr": DiscreteModelSampling(prediction=V_PREDICTION, zsnr=True),
    "lcm": DistilledDiscreteModelSampling(),
    "sd3": DiscreteFlowModelSampling(shift=3.0),
    "flux": FluxModelSampling(),
    "playground": ContinuousEDMModelSampling(EDM, sigma_min=0.002, sigma_max=80.0, sigma_data=0.5),
    "stable_audio": ContinuousVModelSampling(sigma_min=0.03, sigma_max=500.0),
}


def assert_matches(actual, expected):
    actual = torch.as_tensor(actual, dtype=torch.float64)
    assert actual.shape == (len(expected),), f"{actual.tolist()} != {expected}"
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=1e-6)


SD1_6 = {
    'simple': [14.61464119, 5.963130474, 2.918307066, 1.61288619, 0.9323579669, 0.4924092293, 0],
    'sgm_uniform': [14.61464024, 5.948899269, 2.918307066, 1.61558032, 0.9323579669, 0.4935517013, 0],
    'karras': [14.6146431, 6.082151413, 2.232154369, 0.6925705671, 0.1697565913, 0.02916717716, 0],
    'exponential': [14.61464024, 4.21511364, 1.215711355, 0.3506321907, 0.1011283621, 0.02916716039, 0],
    'ddim_uniform': [14.43856907, 5.906448841, 2.90712142, 1.61288619, 0.9323579669, 0.4946968853, 0.04131441191, 0],
    'beta': [14.61464119, 8.707752228, 3.675753355, 1.618278861, 0.7624022961, 0.3235326409, 0],
    'normal': [14.61464024, 5.09240818, 2.279730558, 1.162864566, 0.5711888671, 0.02916716039, 0],
    'linear_quadratic': [14.61464119, 14.49285221, 14.37106419, 14.24927521, 12.58483028, 7.835071564, 0],
    'kl_optimal': [14.61463261, 2.632888317, 1.29476738, 0.7116267085, 0.3356373608, 0.02916715853, 0],
}
SD1_20 = {
    'simple': [14.61464119, 10.90423584, 8.30280304, 6.442955017, 5.087763309, 4.081729412, 3.321083069, 2.735469103,
        2.276463032, 1.910250783, 1.61288619, 1.367172718, 1.16057837, 0.9838172197, 0.8298595548, 0.6932048798,
        0.5692849159, 0.4538185298, 0.3416738212, 0.2230031341, 0],
    'sgm_uniform': [14.61464024, 10.90731716, 8.307170868, 6.447689533, 5.09240818, 4.086081028, 3.325068951,
        2.739082575, 2.279730558, 1.913210154, 1.61558032, 1.369643331, 1.162864566, 0.9859552979, 0.8318837285,
        0.6951495409, 0.5711888671, 0.4557357132, 0.3437048197, 0.2254522741, 0],
    'karras': [14.6146431, 11.7253685, 9.340202332, 7.383617878, 5.789413452, 4.499834538, 3.464747429, 2.640841007,
        1.990916252, 1.48321104, 1.090786099, 0.7909460664, 0.5647215843, 0.396389842, 0.2730379701, 0.184167996,
        0.1213414297, 0.0778600648, 0.04848137125, 0.02916717716, 0],
    'exponential': [14.61464024, 10.53630733, 7.596066475, 5.476322651, 3.948111057, 2.846359015, 2.05205965,
        1.479415894, 1.066573024, 0.7689372897, 0.5543593168, 0.3996609151, 0.2881323397, 0.2077267021, 0.1497588754,
        0.1079674512, 0.07783827186, 0.05611687899, 0.04045701399, 0.02916716039, 0],
    'ddim_uniform': [11.0283308, 8.390685081, 6.506397724, 5.134430885, 4.116696358, 3.347763538, 2.756195784,
        2.292853832, 1.923443317, 1.623692036, 1.376178861, 1.16821599, 0.9904088974, 0.8356528282, 0.6983981133,
        0.5740502477, 0.4583326876, 0.3461866975, 0.2281467319, 0.04131441191, 0],
    'beta': [14.61464119, 13.51569557, 11.54277039, 9.388923645, 7.371844292, 5.686591625, 4.372801781, 3.374724865,
        2.615235806, 2.047311783, 1.618278861, 1.284621119, 1.027329326, 0.8212211728, 0.6548853517, 0.5153906345,
        0.39550969, 0.2912839353, 0.1990586221, 0.1114188209, 0],
    'normal': [14.61464024, 10.74680042, 8.081519127, 6.204935074, 4.855652332, 3.865378141, 3.123761415, 2.5571661,
        2.115657568, 1.764822245, 1.480580688, 1.245813251, 1.048142076, 0.8784281611, 0.7297186852, 0.5964335799,
        0.4735847116, 0.3555454016, 0.2321642488, 0.02916716039, 0],
    'linear_quadratic': [14.61464119, 14.57810497, 14.5415678, 14.50503159, 14.46849537, 14.4319582, 14.39542198,
        14.35888481, 14.32234859, 14.28581238, 14.24927521, 14.07389927, 13.62084484, 12.89011383, 11.88170338,
        10.59561539, 9.031847954, 7.190403461, 5.071280479, 2.674479246, 0],
    'kl_optimal': [14.61463261, 6.80714798, 4.401471138, 3.221911907, 2.514688015, 2.038658619, 1.692815423,
        1.427373886, 1.214932561, 1.039139986, 0.8896134496, 0.759421885, 0.6437384486, 0.5390760303, 0.4428289831,
        0.3529847562, 0.267937243, 0.1863586903, 0.1071087793, 0.02916715853, 0],
}
SD3_6 = {
    'simple': [1, 0.9377810359, 0.8573263884, 0.75, 0.6007193923, 0.3755622208, 0],
    'sgm_uniform': [1, 0.9377105236, 0.8576923609, 0.7511211038, 0.6021505594, 0.3791946173, 0],
    'karras': [1, 0.4326491058, 0.1670026034, 0.05547642335, 0.01499002147, 0.002994012786, 0],
    'exponential': [1, 0.3127884269, 0.0978366062, 0.03060216457, 0.009572002105, 0.002994011855, 0],
    'ddim_uniform': [0.999332428, 0.9369369149, 0.8567752838, 0.75, 0.6007193923, 0.3772455156, 0.005976095796, 0],
    'beta': [1, 0.967707634, 0.8877551556, 0.75074929, 0.5335050821, 0.2331081033, 0],
    'normal': [1, 0.9233424664, 0.8189232945, 0.6683266759, 0.4322250783, 0.008928571828, 0],
    'linear_quadratic': [1, 0.9916666746, 0.9833333492, 0.9750000238, 0.8611111045, 0.5361111164, 0],
    'kl_optimal': [1, 0.7274578214, 0.5110349655, 0.3269068897, 0.1608406454, 0.002994012088, 0],
}
FLUX_1024_6 = {
    'simple': [1, 0.9404710531, 0.863338232, 0.7595109344, 0.6123385429, 0.3871761262, 0],
    'sgm_uniform': [1, 0.9404653311, 0.863376379, 0.7596262693, 0.6124920845, 0.3875684738, 0],
    'karras': [1, 0.3571842909, 0.1067819446, 0.02479681931, 0.003910225816, 0.0003157509491, 0],
    'exponential': [1, 0.1994660348, 0.03978669643, 0.00793609675, 0.00158298132, 0.0003157510655, 0],
    'ddim_uniform': [0.9999366403, 0.9403902888, 0.8632850647, 0.7595109344, 0.6123385429, 0.3873468935,
        0.0006313660415, 0],
    'beta': [1, 0.9690954089, 0.8925824165, 0.75958395, 0.5456489921, 0.2415402681, 0],
    'normal': [1, 0.926674068, 0.8257773519, 0.6781590581, 0.441588819, 0.0009965240024, 0],
    'linear_quadratic': [1, 0.9916666746, 0.9833333492, 0.9750000238, 0.8611111045, 0.5361111164, 0],
    'kl_optimal': [1, 0.7266389728, 0.5096846223, 0.3251291513, 0.1586433798, 0.0003157511528, 0],
}
OTHER_MODELS = {
    ('sd3', 'normal', 20): [1, 0.9818745852, 0.9623857141, 0.9413732886, 0.9186515808, 0.8940030932, 0.8671719432,
        0.8378546834, 0.8056892157, 0.7702391148, 0.7309743166, 0.6872438192, 0.638240099, 0.5829479694, 0.5200740695,
        0.4479442835, 0.3643522263, 0.2663297057, 0.1497872323, 0.008928571828, 0],
    ('flux', 'simple', 20): [1, 0.983608067, 0.9660138488, 0.9470800161, 0.9266473651, 0.9045307636, 0.880513072,
        0.8543381691, 0.8257015944, 0.794239223, 0.7595109344, 0.7209802866, 0.6779867411, 0.629707098, 0.5751029849,
        0.5128440857, 0.4411997795, 0.3578745723, 0.2597584128, 0.1425293535, 0],
    ('playground', 'karras', 6): [79.99998474, 24.40833473, 5.838944912, 0.9654166102, 0.08508720249, 0.001999999629,
        0],
    ('playground', 'normal', 6): [80, 9.608994484, 1.154159665, 0.1386289895, 0.01665106416, 0.001999999862, 0],
    ('lcm', 'normal', 4): [14.61464024, 2.991056204, 0.9728259444, 0.1344506592, 0],
    ('lcm', 'sgm_uniform', 4): [14.61464024, 4.170772076, 1.667901874, 0.7325183153, 0],
    ('zsnr', 'normal', 6): [4518.763672, 7.420985222, 2.609187841, 1.243959785, 0.5967738032, 0.02916716039, 0],
    ('zsnr', 'ddim_uniform', 6): [1124.552612, 9.389937401, 3.484494925, 1.768080235, 0.9868965149, 0.5157666206,
        0.04206756502, 0],
}
DENOISED_SD1 = {
    ('basic', 'normal', 6, 0.6): [1.950161457, 1.344927788, 0.9323579669, 0.624976933, 0.368657738, 0.02916716039, 0],
    ('basic', 'karras', 6, 0.35): [0.3874829412, 0.2479499727, 0.1539083719, 0.09226009995, 0.05311618745,
        0.02916717716, 0],
    ('ksampler', 'normal', 6, 0.6, 'euler'): [1.950161457, 1.344927788, 0.9323579669, 0.624976933, 0.368657738,
        0.02916716039, 0],
    ('ksampler', 'karras', 6, 1.0, 'dpm_2'): [14.6146431, 7.094410896, 3.168604851, 1.27410078, 0.446918577,
        0.1303076893, 0],
    ('ksampler', 'normal', 6, 0.6, 'uni_pc'): [2.279730558, 1.61558032, 1.162864566, 0.8318837285, 0.5711888671,
        0.3437048197, 0],
}
SCHEDULER_NODES = {
    ('karras', 20, 14.614642, 0.0291675, 7.0): [14.6146431, 11.7253685, 9.340208054, 7.383622646, 5.789421082,
        4.499843597, 3.464754581, 2.640846729, 1.990920782, 1.483215809, 1.090789676, 0.7909491062, 0.5647243857,
        0.3963918984, 0.2730396092, 0.1841691732, 0.1213423237, 0.07786076516, 0.04848184064, 0.02916749939, 0],
    ('karras', 6, 80.0, 0.002, 3.5): [79.99999237, 38.21189117, 14.95965672, 4.139029503, 0.5319364667, 0.001999999164,
        0],
    ('exponential', 8, 14.614642, 0.0291675): [14.6146431, 6.012980461, 2.473952293, 1.01787138, 0.4187883139,
        0.1723043025, 0.07089207321, 0.02916750126, 0],
    ('polyexponential', 8, 14.614642, 0.0291675, 1.0): [14.61464024, 6.012979031, 2.473953009, 1.017871141,
        0.4187883139, 0.1723043025, 0.07089207321, 0.02916750126, 0],
    ('polyexponential', 8, 14.614642, 0.0291675, 2.5): [14.61464024, 2.001466751, 0.425691098, 0.1353079528,
        0.0615943335, 0.03825670108, 0.03060025163, 0.02916750126, 0],
    ('vp', 8, 19.9, 0.1, 0.001): [152.1669769, 40.40198517, 13.10668468, 5.139418125, 2.350116968, 1.152332664,
        0.4959063828, 0.01048599277, 0],
    ('laplace', 8, 14.614642, 0.0291675, 0.0, 0.5): [14.61464214, 1.870795965, 1.322864056, 1.080117106, 0.9258255363,
        0.7559355497, 0.5345318317, 0.02916749939],
    ('laplace', 7, 14.614642, 0.0291675, 1.0, 1.3): [14.61464214, 11.33796501, 4.604734898, 2.718281746, 1.604665041,
        0.6517092586, 0.02916749939],
    ('kl_optimal', 5, 14.614642, 0.0291675): [14.61463261, 2.142741442, 0.9615882635, 0.4198364913, 0.02916749939, 0],
}
MODEL_SCHEDULER_NODES = {
    ('beta', 10, 0.6, 0.6): [14.61464119, 11.54277039, 7.371844292, 4.372801781, 2.615235806, 1.618278861, 1.027329326,
        0.6548853517, 0.39550969, 0.1990586221, 0],
    ('beta', 10, 0.5, 0.7): [14.61464119, 9.18761158, 4.884475708, 2.694615126, 1.61288619, 1.023925304, 0.6649985313,
        0.4268407226, 0.2555727363, 0.1233660653, 0],
    ('sd_turbo', 1, 1.0): [14.61464024, 0],
    ('sd_turbo', 4, 1.0): [14.61464024, 8.30280304, 5.087763309, 3.321083069, 0],
    ('sd_turbo', 3, 0.5): [1.61288619, 1.16057837, 0.8298595548, 0],
    ('linear_quadratic', 8, 0.1, 2): [1, 0.9499999881, 0.8999999762, 0.8333333135, 0.7333333492, 0.6000000238,
        0.4333333373, 0.2333333343, 0],
}
TABULATED = {
    ('ays', 'SD1', 10, 1.0): [14.61464119, 6.474575996, 3.863674641, 2.694615126, 1.884192109, 1.39438045, 0.9642583728,
        0.6523686051, 0.3977456391, 0.1515232623, 0],
    ('ays', 'SD1', 6, 1.0): [14.61464119, 4.589205265, 2.391697407, 1.39438045, 0.7431215048, 0.2883345783, 0],
    ('ays', 'SDXL', 20, 1.0): [14.61464119, 9.609467506, 6.318448544, 4.879451275, 3.76817894, 2.866872311, 2.181148052,
        1.70993638, 1.340524435, 1.075001717, 0.8620721102, 0.6917440295, 0.5550693274, 0.4591789842, 0.3798540831,
        0.2976504564, 0.2332364172, 0.1612046063, 0.1114188209, 0.05700675771, 0],
    ('ays', 'SVD', 8, 0.6): [4.972768784, 1.789000034, 0.7853767276, 0.2640435696, 0.05106469244, 0],
    ('gits', 1.2, 10, 1.0): [14.61464119, 5.855200768, 2.844849825, 1.670500159, 1.088953376, 0.7480704784,
        0.5011838078, 0.3210482299, 0.1989491582, 0.0982453227, 0],
    ('gits', 0.8, 2, 1.0): [14.61464119, 7.49001646, 0],
    ('gits', 1.5, 25, 1.0): [14.61464119, 3.502596617, 1.762929797, 1.20850575, 0.9017533064, 0.7213385105,
        0.5984838009, 0.5135321617, 0.4597837031, 0.4239183068, 0.3885338306, 0.3705373406, 0.3525213301, 0.3344570994,
        0.316316843, 0.2980783284, 0.2791777253, 0.2599124014, 0.2401832491, 0.2198844701, 0.1989491582, 0.1756467968,
        0.1500460058, 0.1204212978, 0.07706007361, 0],
    ('gits', 1.05, 12, 0.6): [2.450702667, 1.615581512, 1.088953376, 0.7213385105, 0.4557369053, 0.2505336702,
        0.0982453227, 0],
}
EXTENDED_SD1_KARRAS_6 = {
    (2, -1.0, 12.0, 'linear'): [14.6146431, 10.34839725, 6.082151413, 2.232154369, 0.6925705671, 0.1697565913,
        0.02916717716, 0],
    (3, 10.0, 0.5, 'cosine'): [14.6146431, 6.082151413, 4.15715313, 2.747956514, 2.232154369, 1.462362528, 0.8988357782,
        0.6925705671, 0.4311635792, 0.2398004234, 0.1697565913, 0.02916717716, 0],
    (3, 10.0, 0.5, 'sine'): [14.6146431, 6.082151413, 5.566349506, 4.15715313, 2.232154369, 2.025889158, 1.462362528,
        0.6925705671, 0.6225267649, 0.431163609, 0.1697565913, 0.02916717716, 0],
}
SD1_KARRAS_6 = [14.6146431, 6.082151413, 2.232154369, 0.6925705671, 0.1697565913, 0.02916717716, 0]


def test_scheduler_names_are_comfyuis_in_its_order():
    assert SCHEDULER_NAMES == ("simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
                               "linear_quadratic", "kl_optimal")


def test_sd1_normal_at_six_steps_is_what_the_reference_renders_used():
    measured = torch.tensor([14.6146, 5.0924, 2.2797, 1.1629, 0.5712, 0.0292, 0.0])  # by the lead, 4 decimals
    torch.testing.assert_close(calculate_sigmas(MODELS["sd1"], "normal", 6), measured, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
@pytest.mark.parametrize(("model", "steps", "expected"), [
    ("sd1", 6, SD1_6), ("sd1", 20, SD1_20), ("sd3", 6, SD3_6), ("flux", 6, FLUX_1024_6)])
def test_schedulers_match_comfyui(model, steps, expected, name):
    assert_matches(calculate_sigmas(MODELS[model], name, steps), expected[name])


def test_flux_at_1024x1024_is_the_default_flux_sampling():
    assert FluxModelSampling.for_image_size(1024, 1024).mu == pytest.approx(FluxModelSampling().mu, abs=1e-12)
    assert_matches(calculate_sigmas(FluxModelSampling.for_image_size(1024, 1024), "normal", 6), FLUX_1024_6["normal"])


@pytest.mark.parametrize(("model", "name", "steps"), list(OTHER_MODELS))
def test_schedulers_of_other_model_samplings_match_comfyui(model, name, steps):
    assert_matches(calculate_sigmas(MODELS[model], name, steps), OTHER_MODELS[(model, name, steps)])


@pytest.mark.parametrize("case", list(DENOISED_SD1))
def test_denoise_handling_matches_comfyui(case):
    node, name, steps, denoise, *sampler = case
    if node == "basic":
        sigmas = basic_scheduler_sigmas(MODELS["sd1"], name, steps, denoise)
    else:
        sigmas = ksampler_sigmas(MODELS["sd1"], name, steps, denoise, sampler_name=sampler[0])
    assert_matches(sigmas, DENOISED_SD1[case])


def test_no_denoise_gives_no_sigmas():
    assert basic_scheduler_sigmas(MODELS["sd1"], "normal", 6, 0.0).shape == (0,)
    assert ksampler_sigmas(MODELS["sd1"], "normal", 6, 0.0).shape == (0,)
    assert align_your_steps_sigmas("SD1", 6, 0.0).shape == (0,)
    assert gits_sigmas(1.2, 6, 0.0).shape == (0,)


SCHEDULE_FUNCTIONS = {"karras": karras_sigmas, "exponential": exponential_sigmas,
                      "polyexponential": polyexponential_sigmas, "vp": vp_sigmas, "laplace": laplace_sigmas,
                      "kl_optimal": kl_optimal_sigmas}


@pytest.mark.parametrize("case", list(SCHEDULER_NODES))
def test_range_schedules_match_comfyui(case):
    name, steps, *numbers = case
    if name == "vp":
        sigmas = vp_sigmas(steps, *numbers)
    else:  # the nodes' order is sigma_max, sigma_min; the functions', like k-diffusion's, sigma_min, sigma_max
        sigma_max, sigma_min, *parameters = numbers
        sigmas = SCHEDULE_FUNCTIONS[name](steps, sigma_min, sigma_max, *parameters)
    assert_matches(sigmas, SCHEDULER_NODES[case])


@pytest.mark.parametrize("case", list(MODEL_SCHEDULER_NODES))
def test_model_schedules_match_comfyui(case):
    name, steps, *parameters = case
    if name == "beta":
        sigmas = beta_sigmas(MODELS["sd1"], steps, *parameters)
    elif name == "sd_turbo":
        sigmas = sd_turbo_sigmas(MODELS["sd1"], steps, *parameters)
    else:
        sigmas = linear_quadratic_sigmas(MODELS["sd3"], steps, *parameters)
    assert_matches(sigmas, MODEL_SCHEDULER_NODES[case])


@pytest.mark.parametrize("case", list(TABULATED))
def test_align_your_steps_and_gits_match_comfyui(case):
    name, table, steps, denoise = case
    schedule = align_your_steps_sigmas if name == "ays" else gits_sigmas
    assert_matches(schedule(table, steps, denoise), TABULATED[case])


def test_gits_has_a_schedule_for_every_coefficient_and_step_count():
    assert list(GITS_NOISE_LEVELS) == [round(0.80 + 0.05 * i, 2) for i in range(15)]
    for rows in GITS_NOISE_LEVELS.values():
        assert [len(row) for row in rows] == [steps + 1 for steps in range(2, 21)]
        assert all(list(row) == sorted(row, reverse=True) for row in rows)
    assert_matches(gits_sigmas(1.149999, 10), gits_sigmas(1.15, 10).tolist())
    with pytest.raises(ValueError, match="coeff"):
        gits_sigmas(0.82, 10)


def test_split_sigmas_share_the_sigma_at_the_split():
    high, low = split_sigmas(torch.tensor(SD1_KARRAS_6), 2)
    assert_matches(high, SD1_KARRAS_6[:3])
    assert_matches(low, SD1_KARRAS_6[2:])


@pytest.mark.parametrize(("denoise", "low_steps"), [(1.0, 6), (0.55, 3), (0.3, 2)])
def test_split_sigmas_denoise_keeps_the_last_steps_low(denoise, low_steps):
    high, low = split_sigmas_denoise(torch.tensor(SD1_KARRAS_6), denoise)
    assert_matches(high, SD1_KARRAS_6[:-low_steps])
    assert_matches(low, SD1_KARRAS_6[-(low_steps + 1):])


def test_split_sigmas_denoise_without_low_steps_leaves_the_high_part_empty_too():
    high, low = split_sigmas_denoise(torch.tensor(SD1_KARRAS_6), 0.0)
    assert high.shape == (0,) and low.tolist() == [0.0]  # ComfyUI's sigmas[:-0]


def test_flip_sigmas_starts_above_zero():
    assert_matches(flip_sigmas(torch.tensor(SD1_KARRAS_6)), [0.0001] + SD1_KARRAS_6[-2::-1])
    assert flip_sigmas(torch.tensor([])).shape == (0,)


def test_set_first_sigma_leaves_the_input_alone():
    sigmas = torch.tensor(SD1_KARRAS_6)
    assert_matches(set_first_sigma(sigmas, 136.0), [136.0] + SD1_KARRAS_6[1:])
    assert float(sigmas[0]) == pytest.approx(SD1_KARRAS_6[0])


@pytest.mark.parametrize("case", list(EXTENDED_SD1_KARRAS_6))
def test_extend_intermediate_sigmas_matches_comfyui(case):
    assert_matches(extend_intermediate_sigmas(torch.tensor(SD1_KARRAS_6), *case), EXTENDED_SD1_KARRAS_6[case])


def test_sampling_percent_to_sigma():
    sd1, sd3 = MODELS["sd1"], MODELS["sd3"]
    assert sampling_percent_to_sigma(sd1, 0.0) == 999999999.9 and sampling_percent_to_sigma(sd1, 1.0) == 0.0
    assert sampling_percent_to_sigma(sd1, 0.0, True) == pytest.approx(14.61464119, abs=1e-6)
    assert sampling_percent_to_sigma(sd1, 1.0, True) == pytest.approx(0.0291671585, abs=1e-9)
    assert sampling_percent_to_sigma(sd1, 0.5) == pytest.approx(1.61558032, abs=1e-6)
    assert sampling_percent_to_sigma(sd3, 0.0) == 1.0 and sampling_percent_to_sigma(sd3, 0.0, True) == 1.0
    assert sampling_percent_to_sigma(sd3, 1.0, True) == pytest.approx(0.002994012088, abs=1e-9)


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("name", SCHEDULER_NAMES)
@pytest.mark.parametrize("steps", [2, 5, 20])
def test_every_scheduler_descends_to_zero(model, name, steps):
    sigmas = calculate_sigmas(MODELS[model], name, steps)
    assert sigmas.dtype == torch.float32 and float(sigmas[-1]) == 0.0
    assert (sigmas[1:] < sigmas[:-1]).all()
    if name not in ("ddim_uniform", "beta"):  # DDIM's stride and beta's merged steps change the count
        assert len(sigmas) == steps + 1


def test_kl_optimal_with_one_step_is_nan_as_in_comfyui():
    assert torch.isnan(calculate_sigmas(MODELS["sd1"], "kl_optimal", 1)[0])


def test_laplace_ends_at_sigma_min_without_a_zero():
    assert float(laplace_sigmas(5, 0.03, 14.6)[-1]) == pytest.approx(0.03)


def test_unknown_scheduler_is_refused():
    with pytest.raises(ValueError, match="scheduler"):
        calculate_sigmas(MODELS["sd1"], "trailing", 6)
