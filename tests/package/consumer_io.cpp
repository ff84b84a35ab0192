// universeg::io through the installed package: a PNG written and read back (zlib and the
// compiled stb unit come with the target).
#include <universeg/io/image.hpp>

#include <cstdio>
#include <filesystem>

int main() {
    const std::string path = (std::filesystem::temp_directory_path() / "universeg_consumer_io.png").string();
    universeg::Image img{2, 3, {0.0f, 0.2f, 0.4f, 0.6f, 0.8f, 1.0f}};
    universeg::save_image_png(path, img, 8);
    const universeg::Image back = universeg::load_image(path);
    std::filesystem::remove(path);
    const bool same = back.height == 2 && back.width == 3 && std::abs(back.pixels[5] - 1.0f) < 1e-6f;
    std::printf("universeg::io: PNG round trip %s\n", same ? "ok" : "FAILED");
    return same ? 0 : 1;
}
