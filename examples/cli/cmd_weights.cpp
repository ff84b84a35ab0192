// universeg convert / info: weights files.
#include "cli.hpp"

#include <universeg/universeg.hpp>

#include <cstdio>
#include <set>

namespace cli {

int cmd_convert(int argc, char** argv) {
    Args a("convert", "usage: universeg convert IN.pt OUT.safetensors\n\n"
                      "Reads a PyTorch checkpoint (or safetensors), checks it is a UniverSeg model and writes its\n"
                      "weights as float32 safetensors, the project's canonical format.\n",
           argc, argv, {});
    if (a.help()) return std::fputs(a.usage().c_str(), stdout), 0;
    if (a.positional().size() != 2) throw Error("expected IN and OUT (see universeg convert --help)");
    const std::string& in = a.positional()[0];
    const std::string& out = a.positional()[1];
    const universeg::Model model = universeg::load_model(in);
    universeg::save_safetensors(out, model.state_dict(), {{"format", "pt"}, {"universeg_config", model.config().to_string()}});
    std::printf("wrote %s: %s, %lld parameters\n", out.c_str(), model.config().to_string().c_str(),
                (long long)model.parameter_count());
    return 0;
}

int cmd_info(int argc, char** argv) {
    Args a("info",
           "usage: universeg info FILE   (or --weights FILE, as the other commands take it)\n\n"
           "Describes a UniverSeg weights file (PyTorch checkpoint or safetensors).\n",
           argc, argv, {"--weights"});
    if (a.help()) return std::fputs(a.usage().c_str(), stdout), 0;
    if (a.positional().size() + a.has("--weights") != 1) throw Error("expected one FILE (see universeg info --help)");
    const std::string path = a.has("--weights") ? a.get("--weights") : a.positional()[0];
    const universeg::StateDict sd = universeg::load_state_dict(path);
    const universeg::Model model = universeg::load_model(sd, path);  // the file is read once
    const universeg::Config& c = model.config();
    std::set<std::string> dtypes;  // as stored; the model computes in float32 whatever they are
    for (const auto& kv : sd) dtypes.insert(kv.second.stored_dtype);
    std::string dtype;
    for (const std::string& d : dtypes) dtype += (dtype.empty() ? "" : ", ") + d;
    std::printf("file:          %s\n", path.c_str());
    std::printf("architecture:  %s\n", c.to_string().c_str());
    std::printf("parameters:    %lld\n", (long long)model.parameter_count());
    std::printf("dtype:         %s (computed in float32)\n", dtype.c_str());
    std::printf("input sizes:   H and W multiples of %lld\n", (long long)c.size_multiple());
    return 0;
}

}  // namespace cli
