"""The stream-health strip: counters and a banner when the stream stops, ends or is lost."""

from __future__ import annotations

from pyqtgraph.Qt import QtCore, QtWidgets

from plstream.dashboard._status import HEALTH_FIELDS

__all__ = ["HealthPanel"]

_BANNER_STYLE = {
    "info": "background:#1d3d5c; color:#e8f2ff;",
    "warning": "background:#7a5200; color:#fff4d6;",
    "error": "background:#8b1a1a; color:#ffecec;",
}


class HealthPanel(QtWidgets.QWidget):
    """A banner (hidden while all is well) above one row of labelled counters.

    Fed with :meth:`DashboardModel.health`'s dict; only changed texts are set.
    """

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        self.banner = QtWidgets.QLabel("")
        self.banner.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.banner.setWordWrap(True)
        self.banner.setVisible(False)
        font = self.banner.font()
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.15)
        self.banner.setFont(font)
        layout.addWidget(self.banner)
        row = QtWidgets.QHBoxLayout()
        row.setSpacing(18)
        self.values: dict[str, QtWidgets.QLabel] = {}
        for key, label in HEALTH_FIELDS:
            name = QtWidgets.QLabel(f"{label}:")
            name.setStyleSheet("color: gray;")
            value = QtWidgets.QLabel("—")
            value.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
            pair = QtWidgets.QHBoxLayout()
            pair.setSpacing(4)
            pair.addWidget(name)
            pair.addWidget(value)
            row.addLayout(pair)
            self.values[key] = value
        row.addStretch(1)
        layout.addLayout(row)
        self.banner_level = "ok"

    @property
    def banner_text(self) -> str:
        """The banner's text ("" while hidden)."""
        return "" if self.banner.isHidden() else self.banner.text()

    def update_view(self, health: dict[str, str]) -> None:
        """Show ``health`` (keys of :data:`HEALTH_FIELDS` plus ``banner_level``, ``banner_text``)."""
        for key, label in self.values.items():
            text = health.get(key, "—")
            if label.text() != text:
                label.setText(text)
        level, text = health.get("banner_level", "ok"), health.get("banner_text", "")
        visible = level != "ok" and bool(text)
        if level != self.banner_level or text != self.banner.text():
            self.banner_level = level
            self.banner.setText(text)
            self.banner.setStyleSheet(_BANNER_STYLE.get(level, "") + " padding:4px; border-radius:3px;")
        if self.banner.isHidden() == visible:
            self.banner.setVisible(visible)
