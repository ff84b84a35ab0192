// chart.hpp - a small SVG line chart, so the project draws its own figures (training curves,
// latency against support size) without plotting libraries.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

namespace cli {

struct Series {
    std::string name;
    std::vector<double> x, y;
};

struct ChartAxes {
    std::string title, x_label, y_label;
    bool log_y = false;
};

namespace detail {

inline std::string fmt(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4g", v);
    return buf;
}

inline std::string escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (c == '<') out += "&lt;";
        else if (c == '>') out += "&gt;";
        else if (c == '&') out += "&amp;";
        else out += c;
    }
    return out;
}

// About five round tick values covering [lo, hi].
inline std::vector<double> ticks(double lo, double hi) {
    const double span = hi - lo > 0 ? hi - lo : 1.0;
    const double raw = span / 5, mag = std::pow(10.0, std::floor(std::log10(raw)));
    const double step = raw / mag < 1.5 ? mag : raw / mag < 3.5 ? 2 * mag : raw / mag < 7.5 ? 5 * mag : 10 * mag;
    std::vector<double> t;
    for (double v = std::ceil(lo / step) * step; v <= hi + 1e-9 * span; v += step) t.push_back(std::abs(v) < 1e-12 * span ? 0 : v);
    return t;
}

}  // namespace detail

// Renders the series as an SVG document (one colour per series, legend, axes with ticks).
inline std::string line_chart_svg(const ChartAxes& axes, const std::vector<Series>& series) {
    const double W = 720, H = 440, left = 70, right = 170, top = 40, bottom = 55;
    double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
    auto ty = [&](double v) { return axes.log_y ? std::log10(std::max(v, 1e-300)) : v; };
    for (const Series& s : series)
        for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
            x0 = std::min(x0, s.x[i]), x1 = std::max(x1, s.x[i]);
            y0 = std::min(y0, ty(s.y[i])), y1 = std::max(y1, ty(s.y[i]));
        }
    if (!(x0 <= x1)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
    if (x1 == x0) x1 = x0 + 1;
    if (y1 == y0) y1 = y0 + 1;
    if (!axes.log_y && y0 > 0 && y0 < 0.5 * y1) y0 = 0;  // anchor at zero when it is close anyway
    auto px = [&](double v) { return left + (v - x0) / (x1 - x0) * (W - left - right); };
    auto py = [&](double v) { return H - bottom - (ty(v) - y0) / (y1 - y0) * (H - top - bottom); };
    static const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};

    std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + detail::fmt(W) + "\" height=\"" +
                    detail::fmt(H) + "\" font-family=\"sans-serif\" font-size=\"12\">\n";
    s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
    s += "<text x=\"" + detail::fmt(W / 2) + "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" +
         detail::escape(axes.title) + "</text>\n";
    for (double t : detail::ticks(x0, x1)) {
        s += "<line x1=\"" + detail::fmt(px(t)) + "\" x2=\"" + detail::fmt(px(t)) + "\" y1=\"" + detail::fmt(top) +
             "\" y2=\"" + detail::fmt(H - bottom) + "\" stroke=\"#ddd\"/>\n";
        s += "<text x=\"" + detail::fmt(px(t)) + "\" y=\"" + detail::fmt(H - bottom + 16) + "\" text-anchor=\"middle\">" +
             detail::fmt(t) + "</text>\n";
    }
    for (double t : detail::ticks(y0, y1)) {
        const double v = axes.log_y ? std::pow(10.0, t) : t;
        s += "<line x1=\"" + detail::fmt(left) + "\" x2=\"" + detail::fmt(W - right) + "\" y1=\"" + detail::fmt(py(v)) +
             "\" y2=\"" + detail::fmt(py(v)) + "\" stroke=\"#ddd\"/>\n";
        s += "<text x=\"" + detail::fmt(left - 6) + "\" y=\"" + detail::fmt(py(v) + 4) + "\" text-anchor=\"end\">" +
             detail::fmt(v) + "</text>\n";
    }
    s += "<rect x=\"" + detail::fmt(left) + "\" y=\"" + detail::fmt(top) + "\" width=\"" + detail::fmt(W - left - right) +
         "\" height=\"" + detail::fmt(H - top - bottom) + "\" fill=\"none\" stroke=\"black\"/>\n";
    s += "<text x=\"" + detail::fmt((left + W - right) / 2) + "\" y=\"" + detail::fmt(H - 12) +
         "\" text-anchor=\"middle\">" + detail::escape(axes.x_label) + "</text>\n";
    s += "<text transform=\"translate(16," + detail::fmt((top + H - bottom) / 2) +
         ") rotate(-90)\" text-anchor=\"middle\">" + detail::escape(axes.y_label) + "</text>\n";
    for (size_t k = 0; k < series.size(); ++k) {
        const Series& ser = series[k];
        const char* c = colors[k % 6];
        std::string pts;
        for (size_t i = 0; i < ser.x.size() && i < ser.y.size(); ++i) pts += detail::fmt(px(ser.x[i])) + "," + detail::fmt(py(ser.y[i])) + " ";
        s += "<polyline fill=\"none\" stroke=\"" + std::string(c) + "\" stroke-width=\"2\" points=\"" + pts + "\"/>\n";
        if (ser.x.size() <= 40)
            for (size_t i = 0; i < ser.x.size() && i < ser.y.size(); ++i)
                s += "<circle cx=\"" + detail::fmt(px(ser.x[i])) + "\" cy=\"" + detail::fmt(py(ser.y[i])) + "\" r=\"3\" fill=\"" + c + "\"/>\n";
        const double ly = top + 10 + 20 * double(k);
        s += "<line x1=\"" + detail::fmt(W - right + 12) + "\" x2=\"" + detail::fmt(W - right + 32) + "\" y1=\"" +
             detail::fmt(ly) + "\" y2=\"" + detail::fmt(ly) + "\" stroke=\"" + c + "\" stroke-width=\"2\"/>\n";
        s += "<text x=\"" + detail::fmt(W - right + 38) + "\" y=\"" + detail::fmt(ly + 4) + "\">" + detail::escape(ser.name) + "</text>\n";
    }
    return s + "</svg>\n";
}

}  // namespace cli
