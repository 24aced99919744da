"""Hand-drawn parts of the screens. pygame_gui draws the form controls; these draw what
would be too slow or too plain as widgets (a thousand bubbles are never a thousand
elements). One module each: ``style`` (colours, text styles), ``status_bar``,
``conversation_list``, ``message_view`` and ``toast``."""

from chatpad.ui.conversation_list import ConversationList
from chatpad.ui.message_view import MessageView
from chatpad.ui.status_bar import STATUS_BAR_HEIGHT, draw_status_bar
from chatpad.ui.style import Colors, Styles
from chatpad.ui.toast import Toast

__all__ = ["STATUS_BAR_HEIGHT", "Colors", "ConversationList", "MessageView", "Styles",
           "Toast", "draw_status_bar"]
