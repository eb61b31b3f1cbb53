// Send-to-device messaging (spec: "Send-to-Device messaging" → PUT /sendToDevice).
import type Router from '@koa/router';
import type { Services } from '../services.js';
import { MatrixError } from '../http/errors.js';
import { compile, validateBody } from '../http/validate.js';
import { requesterOf } from '../http/auth.js';
import { parseUserId } from '../accounts/ids.js';
import type { ToDeviceMessages } from '../e2ee/to-device.js';

const SendToDeviceBody = compile({
  type: 'object',
  required: ['messages'],
  properties: {
    messages: { type: 'object', additionalProperties: { type: 'object', additionalProperties: { type: 'object' } } },
  },
});

const MAX_ID_LENGTH = 255;

export function toDeviceRoutes(s: Services) {
  const { auth, e2ee } = s;
  return (r: Router) => {
    // PUT /sendToDevice/{eventType}/{txnId}
    r.put('/sendToDevice/:eventType/:txnId', auth.requireAuth({ allowGuest: true }), validateBody(SendToDeviceBody), async (ctx) => {
      const { eventType, txnId } = ctx.params;
      if (eventType.length > MAX_ID_LENGTH || txnId.length > MAX_ID_LENGTH) throw new MatrixError(400, 'M_INVALID_PARAM', 'Event type or transaction id too long');
      const { messages } = ctx.request.body as { messages: ToDeviceMessages };
      for (const [userId, devices] of Object.entries(messages)) {
        if (!parseUserId(userId) || userId.length > MAX_ID_LENGTH) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid user id ${userId}`);
        for (const deviceId of Object.keys(devices)) {
          if (!deviceId || deviceId.length > MAX_ID_LENGTH) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid device id ${deviceId}`);
        }
      }
      const req = requesterOf(ctx);
      await e2ee.toDevice.send({ userId: req.userId, deviceId: req.deviceId }, eventType, txnId, messages);
      ctx.body = {};
    });
  };
}
